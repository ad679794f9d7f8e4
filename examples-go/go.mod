module execdriver/examples-go

go 1.19

module execdriver

go 1.19

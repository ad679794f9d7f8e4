package execdriver_test

// The README's Go snippet, as a user's program: its go.mod block (with this module's
// path for the placeholder) and its Go block, built and run against the library.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fenced returns the bodies of the ```lang blocks of a Markdown text.
func fenced(text, lang string) []string {
	var out []string
	open := "```" + lang + "\n"
	for {
		i := strings.Index(text, open)
		if i < 0 {
			return out
		}
		text = text[i+len(open):]
		end := strings.Index(text, "```")
		out = append(out, text[:end])
		text = text[end:]
	}
}

func TestReadmeSnippet(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	mod, code := fenced(string(readme), "gomod"), fenced(string(readme), "go")
	if len(mod) != 1 || len(code) != 1 {
		t.Fatalf("want one gomod and one go block in the README, got %d and %d", len(mod), len(code))
	}
	here, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	const placeholder = "/path/to/execdriver/examples-go"
	if !strings.Contains(mod[0], placeholder) {
		t.Fatalf("the gomod block lacks %s: %q", placeholder, mod[0])
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte(strings.ReplaceAll(mod[0], placeholder, here)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(code[0]), 0o644); err != nil {
		t.Fatal(err)
	}
	run := exec.Command(goBin, "run", ".")
	run.Dir = dir
	run.Env = append(os.Environ(), "EXECDRIVER_LIB="+libPath)
	out, err := run.CombinedOutput()
	// The output the snippet's comments promise.
	if want := "true\n130 2\ntrue\n"; err != nil || string(out) != want {
		t.Fatalf("the README's Go snippet: %v, output %q, want %q", err, out, want)
	}
}

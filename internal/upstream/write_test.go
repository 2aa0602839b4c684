package upstream

import (
	"bufio"
	"strings"
	"testing"
)

// written runs write on a fresh bufio.Writer and returns what it wrote.
func written(write func(bw *bufio.Writer) error) (string, error) {
	var sb strings.Builder
	bw := bufio.NewWriter(&sb)
	err := write(bw)
	bw.Flush()
	return sb.String(), err
}

func TestWriteField(t *testing.T) {
	tests := []struct {
		name, value string
		ok          bool
	}{
		{"X-Test", "value", true},
		{"x-lower", "", true},
		{"A!#$%&'*+-.^_`|~09z", "v", true},
		{"Accept", "text/html, */*;q=0.8", true},
		{"X-Tab", "a\tb", true},
		{"X-Obs-Text", "caf\xc3\xa9", true}, // bytes above 0x7f are obs-text, allowed
		{"", "v", false},
		{"Bad Name", "v", false},
		{"X-A:b", "v", false},
		{"X\tTab", "v", false},
		{"X(Paren)", "v", false},
		{"X\r\nInjected", "v", false},
		{"Caf\xc3\xa9", "v", false},
		{"X-A", "a\r\nX-Injected: 1", false},
		{"X-A", "a\nb", false},
		{"X-A", "a\rb", false},
		{"X-A", "a\x00b", false},
		{"X-A", "a\x7fb", false},
		{"X-A", "a\x1bb", false},
	}
	for _, tt := range tests {
		got, err := written(func(bw *bufio.Writer) error { return WriteField(bw, tt.name, tt.value) })
		switch {
		case tt.ok && err != nil:
			t.Errorf("WriteField(%q, %q): %v, want it written", tt.name, tt.value, err)
		case tt.ok && got != tt.name+": "+tt.value+"\r\n":
			t.Errorf("WriteField(%q, %q) wrote %q", tt.name, tt.value, got)
		case !tt.ok && err == nil:
			t.Errorf("WriteField(%q, %q) accepted it, want an error", tt.name, tt.value)
		case !tt.ok && got != "":
			t.Errorf("WriteField(%q, %q) refused it but wrote %q", tt.name, tt.value, got)
		}
	}
}

func TestWriteRequestLine(t *testing.T) {
	tests := []struct {
		target, host string
		ok           bool
	}{
		{"/", "app.example", true},
		{"/a/b%20c?x=1&y=%2F", "app.example", true},
		{"*", "app.example", true},
		{"http://app.example/x", "app.example", true},
		{"/", "127.0.0.1:8080", true},
		{"/", "[::1]:8080", true},
		{"", "app.example", false},
		{"/a b", "app.example", false},
		{"/a\tb", "app.example", false},
		{"/a\r\nX-Injected: 1", "app.example", false},
		{"/a\x00", "app.example", false},
		{"/a\x7f", "app.example", false},
		{"/", "", false},
		{"/", "app.example\r\nX-Injected: 1", false},
		{"/", "app.example\n", false},
		{"/", "app\x00.example", false},
	}
	for _, tt := range tests {
		got, err := written(func(bw *bufio.Writer) error { return WriteRequestLine(bw, "GET", tt.target, tt.host) })
		want := "GET " + tt.target + " HTTP/1.1\r\nHost: " + tt.host + "\r\n"
		switch {
		case tt.ok && err != nil:
			t.Errorf("WriteRequestLine(%q, %q): %v, want it written", tt.target, tt.host, err)
		case tt.ok && got != want:
			t.Errorf("WriteRequestLine(%q, %q) wrote %q, want %q", tt.target, tt.host, got, want)
		case !tt.ok && err == nil:
			t.Errorf("WriteRequestLine(%q, %q) accepted it, want an error", tt.target, tt.host)
		case !tt.ok && got != "":
			t.Errorf("WriteRequestLine(%q, %q) refused it but wrote %q", tt.target, tt.host, got)
		}
	}
}

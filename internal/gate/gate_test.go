package gate

import (
	"net/http"
	"testing"
)

func TestSafePath(t *testing.T) {
	for in, want := range map[string]string{
		"/d/home?orgId=1":         "/d/home?orgId=1",
		"":                        "/",
		"https://evil.example/":   "/",
		"//evil.example/":         "/",
		"/\\evil.example/":        "/",
		"/ok\r\nSet-Cookie: x=1":  "/",
		"relative/path":           "/",
		"/.moat/auth?code=x&to=/": "/.moat/auth?code=x&to=/",
	} {
		if got := SafePath(in); got != want {
			t.Errorf("SafePath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithoutCookie(t *testing.T) {
	for _, tc := range []struct {
		in   []string
		want []string
	}{
		{[]string{CookieName + "=secret"}, nil},
		{[]string{"theme=dark; " + CookieName + "=secret; lang=en"}, []string{"theme=dark; lang=en"}},
		{[]string{"a=1", CookieName + "=secret"}, []string{"a=1"}},
		{[]string{"__Host-moat-apps=kept"}, []string{"__Host-moat-apps=kept"}},
	} {
		h := http.Header{"Cookie": tc.in}
		withoutCookie(h)
		got := h.Values("Cookie")
		if len(got) != len(tc.want) || (len(got) > 0 && got[0] != tc.want[0]) {
			t.Errorf("%q: %q, want %q", tc.in, got, tc.want)
		}
	}
}

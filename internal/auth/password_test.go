package auth

import (
	"errors"
	"strings"
	"testing"

	"moat/internal/config"
)

func TestCheckPassword(t *testing.T) {
	for _, tc := range []struct {
		name, policy, password string
		problem                string // empty: accepted
	}{
		{"long enough", config.PolicyLength, "correct horse battery", ""},
		{"eleven characters", config.PolicyLength, "abcdefghijk", "has 11 characters"},
		{"twelve characters in other scripts", config.PolicyLength, "пароль-длинный", ""},
		{"too long", config.PolicyLength, strings.Repeat("a", 257), "has 257 characters"},
		{"common and long", config.PolicyLength, "qwertyuiopasdfgh", "most common leaked"},
		{"common, whatever the case", config.PolicyLength, "QwertyuiopASDFGH", "most common leaked"},
		{"the email's local part", config.PolicyLength, "i-am-alice.smith-99", "email or name"},
		{"the name", config.PolicyLength, "my Wonderland key 7", "email or name"},
		{"composition met", config.PolicyComposition, "Tr0ub4d&r", ""},
		{"composition short", config.PolicyComposition, "Ab1!", "has 4 characters"},
		{"composition without a digit", config.PolicyComposition, "Troubador&x", "lacks"},
		{"composition without upper case", config.PolicyComposition, "tr0ub4d&r", "lacks"},
		{"composition without a symbol", config.PolicyComposition, "Tr0ub4dorx", "lacks"},
		{"composition but common", config.PolicyComposition, "P@ssw0rd", "most common leaked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := CheckPassword(tc.policy, tc.password, "alice.smith@example.com", "Alice Wonderland")
			if tc.problem == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var fe *config.FieldError
			if !errors.As(err, &fe) || !strings.Contains(fe.Problem, tc.problem) || fe.Fix == "" || fe.Field != "password" {
				t.Fatalf("got %v, want a refusal of the password that %s, with a fix", err, tc.problem)
			}
			if strings.Contains(err.Error(), tc.password) {
				t.Errorf("the refusal repeats the password: %v", err)
			}
		})
	}
}

// TestCommonList: the embedded list is whole and sorted, and its first
// and last entries are found.
func TestCommonList(t *testing.T) {
	l := common()
	if l.len() < 90000 {
		t.Fatalf("the list holds %d passwords, want the ~96,500 of the top 100,000", l.len())
	}
	first, last := l.line(0), l.line(l.len()-1)
	for _, p := range []string{first, last, "123456", "password", "dragon"} {
		if !l.contains(p) {
			t.Errorf("%q is not found in the list", p)
		}
	}
	if l.contains("a sentence nobody has leaked yet") {
		t.Error("a password not in the list is found")
	}
}

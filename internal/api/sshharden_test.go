package api

import (
	"strings"
	"testing"
)

func TestConfirmRefusal(t *testing.T) {
	trial := SSHTrial{Pending: true, From: "203.0.113.7 50000", Open: []string{"203.0.113.7 50001", "198.51.100.2 40000"}}
	move := trial
	move.NewPort = 2222
	cases := []struct {
		name    string
		t       SSHTrial
		conn    string
		console bool
		refused string
	}{
		{"a new session", trial, "203.0.113.7 50002 10.0.0.1 22", false, ""},
		{"the hardening's own session", trial, "203.0.113.7 50000 10.0.0.1 22", false, "open before the hardening"},
		{"a session open before", trial, "198.51.100.2 40000 10.0.0.1 22", false, "open before the hardening"},
		{"no session", trial, "", false, "--console"},
		{"the console, said so", trial, "", true, ""},
		{"a move, from the new port", move, "203.0.113.7 50003 10.0.0.1 2222", false, ""},
		{"a move, from the old port", move, "203.0.113.7 50003 10.0.0.1 22", false, "not on the new port 2222"},
		{"a move, from the console", move, "", true, "from an SSH session on port 2222"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := confirmRefusal(c.t, sshSession(c.conn), serverPort(c.conn), c.console)
			if (c.refused == "") != (got == "") || !strings.Contains(got, c.refused) {
				t.Errorf("refusal %q, want one saying %q", got, c.refused)
			}
		})
	}
}

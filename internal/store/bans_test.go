package store

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"moat/internal/config"
	"moat/internal/guard"
)

// TestGuardIsStored: the guard's settings, bans and read positions
// survive a reopening.
func TestGuardIsStored(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	if _, err := s.Update(ctx, testActor, false, func(st *config.State) error {
		st.Guard.Ignore = []string{"203.0.113.0/24"}
		st.Guard.Jails = []config.Jail{{Name: "sshd", BanTime: "1h"}}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 11, 21, 7, 0, 0, 123, time.UTC)
	bans := []guard.Ban{
		{Prefix: netip.MustParsePrefix("198.51.100.7/32"), Jail: "sshd", Reason: "5 failed logins", Evidence: []string{"a", "b"}, Repeat: 1, By: "guard", At: at, Expires: at.Add(time.Hour)},
		{Prefix: netip.MustParsePrefix("2001:db8::/64"), Jail: "manual", By: "root", At: at},
	}
	for _, b := range bans {
		if err := s.SaveBan(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	// Saving the same prefix again replaces its ban.
	bans[0].Expires = at.Add(2 * time.Hour)
	if err := s.SaveBan(ctx, bans[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.SavePosition(ctx, "jail sshd file:/var/log/auth.log", `{"inode":7,"offset":42}`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s2, err := OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st, _, err := s2.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Guard.Ignore) != 1 || len(st.Guard.Jails) != 1 || st.Guard.Jails[0].BanTime != "1h" {
		t.Errorf("guard after reopening: %+v", st.Guard)
	}
	got, err := s2.Bans(ctx)
	if err != nil || len(got) != 2 {
		t.Fatalf("bans %+v, %v", got, err)
	}
	if !got[0].Expires.Equal(at.Add(2*time.Hour)) || got[0].Evidence[1] != "b" || !got[1].Expires.IsZero() || got[1].Prefix != bans[1].Prefix {
		t.Errorf("bans after reopening: %+v", got)
	}
	if err := s2.DeleteBan(ctx, bans[0].Prefix); err != nil {
		t.Fatal(err)
	}
	if err := s2.DeleteBan(ctx, bans[0].Prefix); err != nil {
		t.Errorf("forgetting a ban twice: %v", err)
	}
	if got, _ := s2.Bans(ctx); len(got) != 1 {
		t.Errorf("after a delete: %+v", got)
	}
	if pos, err := s2.Position(ctx, "jail sshd file:/var/log/auth.log"); err != nil || pos != `{"inode":7,"offset":42}` {
		t.Errorf("position %q, %v", pos, err)
	}
	if pos, err := s2.Position(ctx, "never"); err != nil || pos != "" {
		t.Errorf("position of a source never read: %q, %v", pos, err)
	}
	mustCheck(t, s2)
}

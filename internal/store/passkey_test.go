package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"moat/internal/auth"
)

// TestPasskeys: a passkey is kept column by column, its use updates it,
// its ID is unique, and it goes with its account.
func TestPasskeys(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	a, err := s.AddAccount(ctx, auth.Account{Email: "o@example.com", Role: auth.RoleAdmin, Hash: "x", MFA: auth.MethodEmail})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Microsecond)
	p := auth.Passkey{ID: []byte{1, 2, 3}, Account: a.ID, Name: "laptop", PublicKey: []byte("cose"), SignCount: 7,
		AAGUID: make([]byte, 16), Transports: []string{"internal", "hybrid"}, Flags: 0x1d, AttestationType: "none", AttestationFormat: "none", Created: now}
	if err := s.AddPasskey(ctx, p); err != nil {
		t.Fatal(err)
	}
	if err := s.AddPasskey(ctx, p); !errors.Is(err, auth.ErrExists) {
		t.Errorf("the same ID twice: %v", err)
	}
	p.SignCount, p.CloneWarning, p.LastUsed = 9, true, now.Add(time.Minute)
	if err := s.UsePasskey(ctx, p); err != nil {
		t.Fatal(err)
	}
	list, err := s.Passkeys(ctx, a.ID)
	if err != nil || len(list) != 1 {
		t.Fatalf("passkeys: %+v %v", list, err)
	}
	got := list[0]
	if got.Name != "laptop" || got.SignCount != 9 || !got.CloneWarning || got.Flags != 0x1d || len(got.Transports) != 2 ||
		!got.LastUsed.Equal(p.LastUsed) || !got.Created.Equal(now) || string(got.PublicKey) != "cose" {
		t.Errorf("read back: %+v", got)
	}
	if err := s.RemovePasskey(ctx, a.ID+1, p.ID); !errors.Is(err, auth.ErrNotFound) {
		t.Errorf("another account's passkey removed: %v", err)
	}
	if _, err := s.AddAccount(ctx, auth.Account{Email: "b@example.com", Role: auth.RoleAdmin, Hash: "x", MFA: auth.MethodEmail}); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if list, _ := s.Passkeys(ctx, a.ID); len(list) != 0 {
		t.Errorf("passkeys outlive their account: %+v", list)
	}
	mustCheck(t, s)
}

// TestCeremonies: a ceremony is good once and until it expires, and a
// new one of the same owner replaces the last.
func TestCeremonies(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	now := time.Now()
	tests := []struct {
		name    string
		put     []string // data put for owner "o", in order
		expires time.Duration
		at      time.Duration // when taken, after now
		want    string        // "" for ErrNotFound
	}{
		{"fresh", []string{"a"}, time.Minute, 0, "a"},
		{"replaced", []string{"a", "b"}, time.Minute, 0, "b"},
		{"expired", []string{"a"}, time.Minute, 2 * time.Minute, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, d := range tt.put {
				if err := s.PutCeremony(ctx, "o", []byte(d), now.Add(tt.expires)); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.TakeCeremony(ctx, "o", now.Add(tt.at))
			if tt.want == "" {
				if !errors.Is(err, auth.ErrNotFound) {
					t.Fatalf("took %q, %v; want not found", got, err)
				}
				s.TakeCeremony(ctx, "o", now.Add(-time.Hour)) // leave nothing for the next case
				return
			}
			if err != nil || string(got) != tt.want {
				t.Fatalf("took %q, %v; want %q", got, err, tt.want)
			}
			if _, err := s.TakeCeremony(ctx, "o", now.Add(tt.at)); !errors.Is(err, auth.ErrNotFound) {
				t.Errorf("taken twice: %v", err)
			}
		})
	}
}

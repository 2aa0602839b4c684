package store

import (
	"context"
	"testing"

	"moat/internal/config"
)

// TestAuthSettingsAreStored: the sign-in settings and the admin domain
// survive a reopening, and their change is one plan step.
func TestAuthSettingsAreStored(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	res, err := s.Update(ctx, testActor, false, func(st *config.State) error {
		st.Server.Domain = "example.com"
		st.Server.AdminDomain = "admin.example.com"
		st.Auth = config.Auth{PasswordPolicy: "composition", SessionIdle: "15m"}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Plan) != 2 || res.Plan[1].Object != "auth" {
		t.Errorf("plan: %+v, want server and auth", res.Plan)
	}
	s.Close()
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	st, _, err := s.State(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Auth.PasswordPolicy != "composition" || st.Auth.SessionIdle != "15m" || st.Server.AdminHost() != "admin.example.com" {
		t.Errorf("after reopening: auth %+v, admin host %q", st.Auth, st.Server.AdminHost())
	}
	mustCheck(t, s)
}

package api

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"moat/internal/mail"
	"moat/internal/store"
)

// TestMailDrop: a waiting message is dropped only when confirmed, and a
// message that a delivery attempt holds is not dropped at all, since it
// would arrive anyway.
func TestMailDrop(t *testing.T) {
	ctx := context.Background()
	st := openStore(t, t.TempDir())
	c := Local((&Server{Store: st, Log: slog.New(slog.DiscardHandler)}).Handler(), store.Actor{Who: "test", From: "test"})
	now := time.Now().UTC()
	for _, m := range []mail.Message{
		{ID: "00000000000000a1", State: mail.Queued},
		{ID: "00000000000000a2", State: mail.Sending},
	} {
		m.App, m.From, m.To, m.Accepted, m.NextAttempt, m.Data = "gitea", "gitea@moat.test", []mail.Recipient{{Addr: "bob@example.org"}}, now, now.Add(time.Hour), []byte("Subject: x\r\n\r\nx\r\n")
		if err := st.Enqueue(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name, path string
		status     int
		says       string
	}{
		{"unconfirmed", "/v1/mail/queue/00000000000000a1", 400, "loses it for good"},
		{"being delivered", "/v1/mail/queue/00000000000000a2?confirm=true", 409, "being delivered at this moment"},
		{"confirmed", "/v1/mail/queue/00000000000000a1?confirm=true", 0, ""},
		{"dropped already", "/v1/mail/queue/00000000000000a1?confirm=true", 404, "not in the queue"},
	} {
		err := c.Do(ctx, "DELETE", tc.path, nil, &mail.Message{})
		var ae *APIError
		switch {
		case tc.status == 0 && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.status != 0 && (!errors.As(err, &ae) || ae.Status != tc.status || !strings.Contains(ae.Body.Error.Message, tc.says)):
			t.Errorf("%s: %v; want %d saying %q", tc.name, err, tc.status, tc.says)
		}
	}
	if m, err := st.Load(ctx, "00000000000000a2"); err != nil || m.State != mail.Sending {
		t.Errorf("the message being delivered: %+v, %v; want it still there", m, err)
	}
}

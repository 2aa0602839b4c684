package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"moat/internal/mail"
)

// TestMailQueue: a message keeps its text until it is final, survives a
// reopening, and a retry cannot bring back a message delivered meanwhile.
func TestMailQueue(t *testing.T) {
	s, path := openTest(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	msg := func(id string) mail.Message {
		return mail.Message{ID: id, App: "gitea", From: "gitea@moat.test", To: []mail.Recipient{{Addr: "a@example.org"}, {Addr: "b@example.org"}},
			Size: 9, MessageID: "<" + id + "@moat.test>", Accepted: at, State: mail.Queued, NextAttempt: at.Add(time.Minute), Data: []byte("Subject: x\r\n\r\nhi\r\n")}
	}
	for _, id := range []string{"0000000000000001", "0000000000000002", "0000000000000003"} {
		if err := s.Enqueue(ctx, msg(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Enqueue(ctx, msg("0000000000000001")); err == nil {
		t.Error("a second message with the same ID was taken")
	}
	if due, err := s.Due(ctx, at, 10); err != nil || len(due) != 0 {
		t.Fatalf("due before their time: %v, %v", due, err)
	}
	due, err := s.Due(ctx, at.Add(time.Minute), 2)
	if err != nil || len(due) != 2 || due[0].Data != nil {
		t.Fatalf("due: %d messages (want 2, without their text), %v", len(due), err)
	}

	// Delivered: the text goes, the row stays for the quota.
	m, err := s.Load(ctx, "0000000000000001")
	if err != nil || string(m.Data) != "Subject: x\r\n\r\nhi\r\n" || len(m.To) != 2 {
		t.Fatalf("load: %+v, %v", m, err)
	}
	m.State, m.Attempts = mail.Delivered, 1
	m.To[0].Done, m.To[1].Done = true, true
	if err := s.Save(ctx, m); err != nil {
		t.Fatal(err)
	}
	if m, _ := s.Load(ctx, m.ID); m.State != mail.Delivered || m.Data != nil {
		t.Errorf("a delivered message: state %s, %d bytes of text kept", m.State, len(m.Data))
	}

	cases := []struct {
		id     string
		want   bool
		reason string
	}{
		{"0000000000000002", true, "a message waiting in the queue"},
		{"0000000000000001", false, "a message delivered meanwhile"},
		{"00000000000000ff", false, "no such message"},
	}
	for _, c := range cases {
		ok, err := s.Retry(ctx, c.id, at)
		if err != nil || ok != c.want {
			t.Errorf("retry %s (%s): %v, %v; want %v", c.id, c.reason, ok, err, c.want)
		}
	}
	if m, _ := s.Load(ctx, "0000000000000001"); m.State != mail.Delivered {
		t.Errorf("a retry brought a delivered message back to %s", m.State)
	}
	if m, _ := s.Load(ctx, "0000000000000002"); !m.NextAttempt.Equal(at) {
		t.Errorf("retried: next attempt %s, want %s", m.NextAttempt, at)
	}

	if err := s.Delete(ctx, "0000000000000003"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "0000000000000003"); !errors.Is(err, mail.ErrNotFound) {
		t.Errorf("deleting it twice: %v, want ErrNotFound", err)
	}
	if _, err := s.Load(ctx, "0000000000000003"); !errors.Is(err, mail.ErrNotFound) {
		t.Errorf("loading a deleted message: %v, want ErrNotFound", err)
	}
	if err := s.Save(ctx, msg("0000000000000003")); !errors.Is(err, mail.ErrNotFound) {
		t.Errorf("saving a deleted message: %v, want ErrNotFound", err)
	}

	s.Close()
	s, err = OpenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != "0000000000000002" {
		t.Fatalf("the queue after reopening: %+v, %v", list, err)
	}
	sent, err := s.Sent(ctx, at)
	if err != nil || len(sent) != 2 {
		t.Errorf("sent since %s: %d messages, %v; want 2 (the delivered one counts)", at, len(sent), err)
	}
	if err := s.Forget(ctx, at.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if sent, _ := s.Sent(ctx, at); len(sent) != 1 {
		t.Errorf("after forgetting the final ones: %d messages, want the waiting one", len(sent))
	}
}

package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"net/smtp"
	"net/textproto"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"moat/internal/mail"
	"moat/internal/secret"
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

	// A message being delivered is not deleted: the attempt would go on.
	sending := msg("0000000000000003")
	sending.State = mail.Sending
	if err := s.Save(ctx, sending); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "0000000000000003"); !errors.Is(err, mail.ErrNotFound) {
		t.Errorf("deleting a message being delivered: %v, want ErrNotFound", err)
	}
	if err := s.Save(ctx, msg("0000000000000003")); err != nil {
		t.Fatal(err)
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

// capAtSize makes s's file as full as a full disk would: SQLite refuses
// to grow it past the pages it has now (SQLITE_FULL, "database or disk is
// full"), which is what a write on a full disk gets. The cap is a
// connection's setting, so the pool is cut to one connection. The
// returned func lifts it, as freeing space does.
func capAtSize(t *testing.T, s *SQLite) (lift func()) {
	t.Helper()
	ctx := context.Background()
	s.db.SetMaxOpenConns(1)
	var pages int
	if err := s.db.QueryRowContext(ctx, "PRAGMA page_count").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, "PRAGMA max_page_count = "+strconv.Itoa(pages)); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := s.db.ExecContext(ctx, "PRAGMA max_page_count = 1073741823"); err != nil {
			t.Fatal(err)
		}
	}
}

// queuedMessage is a waiting message with a body of size bytes: one of
// many pages needs the file to grow.
func queuedMessage(id string, size int) mail.Message {
	at := time.Date(2026, 12, 6, 7, 0, 0, 0, time.UTC)
	data := []byte("Subject: big\r\n\r\n" + strings.Repeat("x", size) + "\r\n")
	return mail.Message{ID: id, App: "gitea", From: "gitea@moat.test", To: []mail.Recipient{{Addr: "a@example.org"}},
		Size: int64(len(data)), Accepted: at, State: mail.Queued, NextAttempt: at, Data: data}
}

// TestFull: the errors a full disk gives, and only those, are taken for
// one.
func TestFull(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	// SQLite's own errors, as a write gets them: Enqueue keeps only
	// ErrNoSpace in its chain.
	insert := func(m mail.Message) error {
		_, err := s.db.ExecContext(ctx, "INSERT INTO mail_queue ("+queueColumns+", data) VALUES (?, ?, ?, '[]', ?, '', ?, 'queued', 0, ?, '', ?)",
			m.ID, m.App, m.From, m.Size, m.Accepted.Format(timeFormat), m.NextAttempt.Format(timeFormat), m.Data)
		return err
	}
	if err := insert(queuedMessage("0000000000000001", 10)); err != nil {
		t.Fatal(err)
	}
	constraint := insert(queuedMessage("0000000000000001", 10))
	lift := capAtSize(t, s)
	sqliteFull := insert(queuedMessage("0000000000000002", 256<<10))
	lift()
	var se *sqlite.Error
	if !errors.As(sqliteFull, &se) || se.Code()&0xff != sqlite3.SQLITE_FULL {
		t.Fatalf("the capped file gave %v, not SQLITE_FULL", sqliteFull)
	}
	if !errors.As(constraint, &se) {
		t.Fatalf("a second row with the same ID gave %v, not an SQLite error", constraint)
	}

	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"SQLITE_FULL", sqliteFull, true},
		{"SQLITE_FULL wrapped", fmt.Errorf("enqueue: %w", sqliteFull), true},
		{"ENOSPC from a write", &fs.PathError{Op: "write", Path: "/var/lib/moat/moat.db-wal", Err: syscall.ENOSPC}, true},
		{"ENOSPC wrapped twice", fmt.Errorf("spool: %w", &fs.PathError{Op: "sync", Path: "/spool/x", Err: syscall.ENOSPC}), true},
		{"EDQUOT", &fs.PathError{Op: "write", Path: "/spool/x", Err: syscall.EDQUOT}, true},
		{"a constraint", constraint, false},
		{"EIO", &fs.PathError{Op: "write", Path: "/spool/x", Err: syscall.EIO}, false},
		{"a timeout", context.DeadlineExceeded, false},
		{"no error", nil, false},
	} {
		if got := full(tc.err); got != tc.want {
			t.Errorf("full(%s: %v) = %v, want %v", tc.name, tc.err, got, tc.want)
		}
	}
}

// TestEnqueueDiskFull: a message the full file cannot take is an
// ErrNoSpace, and leaves nothing of itself: not listed, not loadable, the
// file sound; once there is space again it is taken.
func TestEnqueueDiskFull(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	lift := capAtSize(t, s)
	m := queuedMessage("00000000000000aa", 256<<10)
	if err := s.Enqueue(ctx, m); !errors.Is(err, mail.ErrNoSpace) {
		t.Fatalf("enqueue on a full disk: %v, want ErrNoSpace", err)
	}
	if list, err := s.List(ctx); err != nil || len(list) != 0 {
		t.Errorf("the queue after a refused message: %+v, %v", list, err)
	}
	if _, err := s.Load(ctx, m.ID); !errors.Is(err, mail.ErrNotFound) {
		t.Errorf("loading the refused message: %v, want ErrNotFound", err)
	}
	mustCheck(t, s)
	lift()
	if err := s.Enqueue(ctx, m); err != nil {
		t.Fatalf("enqueue once there is space: %v", err)
	}
	if got, err := s.Load(ctx, m.ID); err != nil || !bytes.Equal(got.Data, m.Data) {
		t.Errorf("the message taken after space was freed: %d bytes, %v", len(got.Data), err)
	}
}

// TestRelayDiskFull: the relay over this store, its file full: the app's
// message is answered 452, not 250, and nothing of it is queued to be
// delivered; once there is space again the same message is taken.
func TestRelayDiskFull(t *testing.T) {
	s, _ := openTest(t)
	ctx, cancel := context.WithCancel(context.Background())
	hash, err := secret.Hash("app-pass")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetCredential(ctx, "gitea", hash); err != nil {
		t.Fatal(err)
	}
	var queued atomic.Int32
	r := mail.NewRelay(mail.RelayOptions{Store: s, Log: slog.New(slog.DiscardHandler), Queued: func() { queued.Add(1) }})
	if err := r.Configure(mail.Settings{
		Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")}, Domain: "moat.test",
		Apps: map[string]bool{"gitea": true}, Hourly: 300, MaxSize: 25 << 20, MaxRecipients: 50,
	}); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { r.Run(ctx, time.Hour); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	c, err := smtp.Dial(r.Addrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(smtp.PlainAuth("", "gitea", "app-pass", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	msg := "From: gitea@moat.test\r\nTo: a@example.org\r\nSubject: big\r\n\r\n" + strings.Repeat(strings.Repeat("x", 78)+"\r\n", 4000)
	send := func() error {
		if err := c.Mail("gitea@moat.test"); err != nil {
			return err
		}
		if err := c.Rcpt("a@example.org"); err != nil {
			return err
		}
		w, err := c.Data()
		if err != nil {
			return err
		}
		if _, err := io.WriteString(w, msg); err != nil {
			return err
		}
		return w.Close()
	}

	lift := capAtSize(t, s)
	var te *textproto.Error
	if err := send(); !errors.As(err, &te) || te.Code != 452 || !strings.HasPrefix(te.Msg, "4.3.1 ") {
		t.Fatalf("DATA on a full disk: %v, want 452 4.3.1", err)
	}
	if sent, err := s.Sent(ctx, time.Time{}); err != nil || len(sent) != 0 {
		t.Errorf("after the 452 the store holds %+v, %v", sent, err)
	}
	if n := queued.Load(); n != 0 {
		t.Errorf("delivery was woken %d times for a message not taken", n)
	}
	mustCheck(t, s)

	lift()
	if err := send(); err != nil {
		t.Fatalf("the same message once there is space: %v", err)
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || queued.Load() != 1 {
		t.Fatalf("after space was freed: queue %+v, %v; delivery woken %d times", list, err, queued.Load())
	}
	if m, err := s.Load(ctx, list[0].ID); err != nil || !bytes.Contains(m.Data, []byte(msg)) {
		t.Errorf("the queued message: %d bytes, %v", len(m.Data), err)
	}
}

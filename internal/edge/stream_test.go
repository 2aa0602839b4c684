package edge

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

func TestWebSocketEcho(t *testing.T) {
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, err := (&websocket.Upgrader{}).Upgrade(w, r, nil)
		if err != nil {
			return // Upgrade has answered already
		}
		defer conn.Close()
		for {
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				return
			}
			if err := conn.WriteMessage(typ, msg); err != nil {
				return
			}
		}
	}))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))

	d := websocket.Dialer{
		NetDialContext:   dialTo(te.httpsAddr),
		TLSClientConfig:  te.client(false).Transport.(*http.Transport).TLSClientConfig,
		HandshakeTimeout: 10 * time.Second,
	}
	conn, resp, err := d.Dial("wss://app.localhost/ws", nil)
	if err != nil {
		t.Fatalf("dial through the edge: %v", err)
	}
	defer conn.Close()
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for i, m := range []struct {
		typ int
		msg string
	}{
		{websocket.TextMessage, "hello"},
		{websocket.BinaryMessage, "\x00\x01\x02 binary"},
		{websocket.TextMessage, strings.Repeat("long ", 20000)},
	} {
		if err := conn.WriteMessage(m.typ, []byte(m.msg)); err != nil {
			t.Fatalf("message %d: write: %v", i, err)
		}
		typ, got, err := conn.ReadMessage()
		if err != nil {
			t.Fatalf("message %d: read: %v", i, err)
		}
		if typ != m.typ || string(got) != m.msg {
			t.Errorf("message %d: echoed type %d, %d bytes; want type %d, %d bytes", i, typ, len(got), m.typ, len(m.msg))
		}
	}
	conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
}

// A large response flows through the edge without being held in memory.
func TestStreamLargeResponse(t *testing.T) {
	const (
		chunk = 32 << 10
		total = 100 << 20
	)
	buf := make([]byte, chunk)
	for i := range buf {
		buf[i] = byte(i)
	}
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		for n := 0; n < total; n += chunk {
			if _, err := w.Write(buf); err != nil {
				return
			}
		}
	}))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))
	c := te.client(false)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	stop, sampled := make(chan struct{}), make(chan uint64)
	go func() {
		peak := base
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			select {
			case <-stop:
				sampled <- peak
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapInuse)
			}
		}
	}()

	resp, err := c.Get("https://app.localhost/big")
	if err != nil {
		close(stop)
		<-sampled
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	close(stop)
	peak := <-sampled
	if err != nil {
		t.Fatalf("after %d bytes: %v", n, err)
	}
	if resp.StatusCode != 200 || n != total {
		t.Fatalf("status %d, %d bytes; want 200, %d bytes", resp.StatusCode, n, total)
	}
	if resp.ContentLength != -1 {
		t.Errorf("Content-Length %d, want none (streamed)", resp.ContentLength)
	}
	growth := int64(peak) - int64(base)
	t.Logf("streamed %d MB; heap in use grew by at most %.1f MB", n>>20, float64(growth)/(1<<20))
	if growth >= 32<<20 {
		t.Errorf("heap in use grew by %.1f MB while streaming %d MB; the edge buffers the response", float64(growth)/(1<<20), total>>20)
	}
}

// Server-sent events reach the client as the app flushes them.
func TestStreamServerSentEvents(t *testing.T) {
	type stream struct {
		gotFirst chan struct{} // closed by the client on the first event
		early    chan bool     // whether it arrived before the second was written
	}
	streams := make(chan stream, 1)
	up := startApp(t, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		s := <-streams
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		fmt.Fprint(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		time.Sleep(200 * time.Millisecond)
		// A buffering edge would hold "one" back until now or later. A
		// slow loopback gets grace before the test calls it buffered.
		select {
		case <-s.gotFirst:
			s.early <- true
		case <-time.After(5 * time.Second):
			s.early <- false
		}
		fmt.Fprint(w, "data: two\n\n")
		w.(http.Flusher).Flush()
	}))
	te := startEdge(t, state("", app("app", up, nil, "app.localhost")))

	for _, tc := range []struct {
		name string
		h2   bool
	}{{"HTTP/1.1", false}, {"HTTP/2", true}} {
		t.Run(tc.name, func(t *testing.T) {
			s := stream{gotFirst: make(chan struct{}), early: make(chan bool, 1)}
			streams <- s
			resp, err := te.client(tc.h2).Get("https://app.localhost/events")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if ev := readEvent(t, br); ev != "data: one" {
				t.Fatalf("first event %q", ev)
			}
			close(s.gotFirst)
			if ev := readEvent(t, br); ev != "data: two" {
				t.Fatalf("second event %q", ev)
			}
			if !<-s.early {
				t.Error("the first event reached the client only after the second was written: the edge buffers streams")
			}
		})
	}
}

// readEvent reads one server-sent event, up to its blank line.
func readEvent(t *testing.T, br *bufio.Reader) string {
	t.Helper()
	var lines []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading event: %v (so far %q)", err, lines)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			return strings.Join(lines, "\n")
		}
		lines = append(lines, line)
	}
}

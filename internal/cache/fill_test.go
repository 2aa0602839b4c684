package cache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// blockedClient is a leader's client that reads nothing until released.
type blockedClient struct {
	*httptest.ResponseRecorder
	release chan struct{}
	reached chan struct{} // closed at the first Write
	once    sync.Once
}

func newBlockedClient() *blockedClient {
	return &blockedClient{ResponseRecorder: httptest.NewRecorder(), release: make(chan struct{}), reached: make(chan struct{})}
}

func (b *blockedClient) Write(p []byte) (int, error) {
	b.once.Do(func() { close(b.reached) })
	<-b.release
	return b.ResponseRecorder.Write(p)
}

// A leader whose client does not read holds no one: the followers get the
// answer as soon as the upstream has sent it, and the app is asked once.
func TestSlowLeaderClientDoesNotHoldWaiters(t *testing.T) {
	gate := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "part one, ")
		w.(http.Flusher).Flush()
		<-gate
		io.WriteString(w, "part two")
	})
	const wait = 3 * time.Second
	h := New(0).Handler("app", Config{TTL: time.Minute, Wait: wait}, o)
	leader := newBlockedClient()
	var lw sync.WaitGroup
	lw.Go(func() { h.ServeHTTP(leader, httptest.NewRequest("GET", "/slow", nil)) })
	<-leader.reached // the leader's client now blocks on the first bytes

	began := time.Now()
	recs := make([]*httptest.ResponseRecorder, 50)
	var wg sync.WaitGroup
	for i := range recs {
		recs[i] = httptest.NewRecorder()
		wg.Go(func() { h.ServeHTTP(recs[i], httptest.NewRequest("GET", "/slow", nil)) })
	}
	time.Sleep(50 * time.Millisecond) // let them join the fetch
	close(gate)
	wg.Wait()
	if took := time.Since(began); took > wait/3 {
		t.Errorf("followers took %v with the leader's client blocked (Wait %v)", took, wait)
	}
	for i, r := range recs {
		if r.Body.String() != "part one, part two" || r.Header().Get("X-Cache") != Hit {
			t.Errorf("follower %d: %s %q, want HIT with the whole page", i, r.Header().Get("X-Cache"), r.Body.String())
		}
	}
	if n := o.count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
	close(leader.release)
	lw.Wait()
	if leader.Body.String() != "part one, part two" || leader.Header().Get("X-Cache") != Miss {
		t.Errorf("leader: %s %q", leader.Header().Get("X-Cache"), leader.Body.String())
	}
}

// smallBuffers shrinks a socket's kernel buffers, so that a client that
// does not read makes the server's writes block after a few KiB, as a
// slow client far away does.
func smallBuffers(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 4096)
		if serr == nil {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096)
		}
	})
	if err != nil {
		return err
	}
	return serr
}

// A cold flood over real HTTP from clients that read slowly (they take
// longer to start reading than Wait): still exactly one upstream request,
// and every client gets the page. Whichever client leads cannot hold the
// others until they give up and go upstream.
func TestColdFloodSlowReaders(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 4<<10) // 64 KiB, far over the socket buffers
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond) // so that the flood arrives during the fetch
		w.Write(body)
	})
	up := httptest.NewServer(o)
	t.Cleanup(up.Close)
	u, _ := url.Parse(up.URL)
	proxy := httputil.NewSingleHostReverseProxy(u)
	pt := &http.Transport{MaxIdleConnsPerHost: 1024}
	t.Cleanup(pt.CloseIdleConnections)
	proxy.Transport = pt
	const wait = time.Second
	front := httptest.NewUnstartedServer(New(0).Handler("app", Config{TTL: time.Minute, Wait: wait}, proxy))
	ln, err := (&net.ListenConfig{Control: smallBuffers}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	front.Listener.Close()
	front.Listener = ln
	front.Start()
	t.Cleanup(front.Close)
	ct := &http.Transport{
		DialContext:         (&net.Dialer{Control: smallBuffers}).DialContext,
		MaxIdleConnsPerHost: 2048,
		DisableCompression:  true,
	}
	t.Cleanup(ct.CloseIdleConnections)
	cl := &http.Client{Transport: ct, Timeout: 30 * time.Second}

	const n = 1000
	var wg sync.WaitGroup
	start := make(chan struct{})
	xcache := make([]string, n)
	for i := range n {
		wg.Go(func() {
			<-start
			res, err := cl.Get(front.URL + "/hot")
			if err != nil {
				t.Errorf("request %d: %v", i, err)
				return
			}
			defer res.Body.Close()
			time.Sleep(wait + wait/2) // a slow reader
			b, err := io.ReadAll(res.Body)
			if err != nil || res.StatusCode != 200 || !bytes.Equal(b, body) {
				t.Errorf("request %d: %d, %d bytes (%v), want 200 and %d bytes", i, res.StatusCode, len(b), err, len(body))
			}
			xcache[i] = res.Header.Get("X-Cache")
		})
	}
	close(start)
	wg.Wait()
	if got := o.count(); got != 1 {
		t.Errorf("upstream saw %d requests, want 1", got)
	}
	statuses := map[string]int{}
	for _, x := range xcache {
		statuses[x]++
	}
	if statuses[Miss] != 1 || statuses[Hit] != n-1 {
		t.Errorf("X-Cache counts %v, want 1 MISS and %d HIT", statuses, n-1)
	}
}

// A leader whose client leaves mid-body does not waste the fetch: an
// answer within MaxBody is fetched to the end and stored, and the
// followers get it without a second upstream request.
func TestLeaderClientLeavesMidBody(t *testing.T) {
	gate := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first part\n")
		w.(http.Flusher).Flush()
		<-gate
		io.WriteString(w, "second part\n")
	})
	u, cl := stack(t, New(0), Config{TTL: time.Minute}, o)

	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", u+"/leave", nil)
	res, err := cl.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(res.Body).ReadString('\n'); err != nil || line != "first part\n" {
		t.Fatalf("leader's first line: %q %v", line, err)
	}
	cancel() // the leader's client goes away mid-body
	res.Body.Close()
	time.Sleep(100 * time.Millisecond) // let the server notice

	replies := make([]reply, 20)
	var wg sync.WaitGroup
	for i := range replies {
		wg.Go(func() { replies[i] = get(t, cl, u+"/leave") })
	}
	time.Sleep(50 * time.Millisecond) // let them join the fetch
	close(gate)
	wg.Wait()
	for i, r := range replies {
		if r.code != 200 || r.body != "first part\nsecond part\n" || r.xcache() != Hit {
			t.Errorf("follower %d: %d %s %q, want the stored page", i, r.code, r.xcache(), r.body)
		}
	}
	if n := o.count(); n != 1 {
		t.Errorf("upstream saw %d requests, want 1", n)
	}
}

// slowClient reads at its own pace and keeps only a count and a check of
// what it got; it notes how far the app ran ahead of it.
type slowClient struct {
	h        http.Header
	code     int
	got      int64
	intact   bool
	pause    time.Duration
	appSent  *atomic.Int64
	maxAhead int64
	flushed  chan string // what was written when Flush came; nil: ignore
	body     strings.Builder
	fail     bool // Write fails: the client is gone
}

func (c *slowClient) Header() http.Header { return c.h }
func (c *slowClient) WriteHeader(code int) {
	if c.code == 0 {
		c.code = code
	}
}

func (c *slowClient) Write(p []byte) (int, error) {
	if c.code == 0 {
		c.code = 200
	}
	if c.fail {
		return 0, errors.New("broken pipe")
	}
	if c.appSent != nil {
		c.maxAhead = max(c.maxAhead, c.appSent.Load()-c.got)
	}
	for i, b := range p {
		if b != pattern[(c.got+int64(i))%int64(len(pattern))] {
			c.intact = false
		}
	}
	if c.flushed != nil {
		c.body.Write(p)
	}
	c.got += int64(len(p))
	time.Sleep(c.pause)
	return len(p), nil
}

func (c *slowClient) Flush() {
	if c.flushed != nil {
		c.flushed <- c.body.String()
	}
}

var pattern = bytes.Repeat([]byte("0123456789abcdef"), 2048) // 32 KiB

// A 10 MiB answer to a leader whose client reads slowly: the app is held
// back to the client's pace once the answer proved too large to store, so
// no more than about MaxBody is ever held for it.
func TestLargeBodySlowLeaderBoundedBuffer(t *testing.T) {
	const size, maxBody = 10 << 20, 1 << 20
	var sent atomic.Int64
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		for range size / len(pattern) {
			w.Write(pattern)
			sent.Add(int64(len(pattern)))
		}
	})
	c := New(0)
	h := c.Handler("app", Config{TTL: time.Minute, MaxBody: maxBody}, o)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	w := &slowClient{h: http.Header{}, intact: true, pause: time.Millisecond, appSent: &sent}
	h.ServeHTTP(w, httptest.NewRequest("GET", "/big", nil))
	runtime.ReadMemStats(&after)
	if w.code != 200 || w.got != size || !w.intact || w.h.Get("X-Cache") != Miss {
		t.Fatalf("leader got %d, %d bytes (intact %v), %s; want 200, %d bytes, MISS", w.code, w.got, w.intact, w.h.Get("X-Cache"), size)
	}
	if limit := int64(maxBody + 2*streamWindow + len(pattern)); w.maxAhead > limit {
		t.Errorf("the app ran %d KiB ahead of the client, want at most %d KiB", w.maxAhead>>10, limit>>10)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 6<<20 {
		t.Errorf("a 10 MiB answer allocated %d MiB", alloc>>20)
	}
	if st := c.Stats(); st.Bytes > 4096 {
		t.Errorf("cache holds %d bytes, want only a pass marker", st.Bytes)
	}
}

// Past MaxBody, a leader whose client is gone stops the fetch: nothing
// is left to stream it to, and nothing will be stored.
func TestLargeBodyGoneLeaderStopsFetch(t *testing.T) {
	stopped := make(chan error, 1)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			if _, err := w.Write(pattern); err != nil {
				stopped <- err
				return
			}
		}
	})
	h := New(0).Handler("app", Config{TTL: time.Minute, MaxBody: 1 << 20}, next)
	w := &slowClient{h: http.Header{}, intact: true, fail: true}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, httptest.NewRequest("GET", "/endless", nil))
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the fetch went on after the client left and the body passed MaxBody")
	}
	if err := <-stopped; err == nil {
		t.Error("the app's write did not fail")
	}
}

// Server-sent events: what the app flushes reaches the leader's client
// at once, while the app goes on (and the answer is still stored).
func TestLeaderFlushReachesClient(t *testing.T) {
	seen := make(chan struct{})
	o := newOrigin(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-seen:
		case <-time.After(5 * time.Second):
		}
		io.WriteString(w, "data: two\n\n")
	})
	h := New(0).Handler("app", Config{TTL: time.Minute}, o)
	w := &slowClient{h: http.Header{}, flushed: make(chan string, 4)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.ServeHTTP(w, httptest.NewRequest("GET", "/events", nil))
	}()
	select {
	case got := <-w.flushed:
		if got != "data: one\n\n" {
			t.Errorf("flushed %q, want the first event", got)
		}
	case <-time.After(time.Second):
		t.Fatal("the first event was not flushed to the client")
	}
	close(seen)
	<-done
	if w.body.String() != "data: one\n\ndata: two\n\n" || w.h.Get("X-Cache") != Miss {
		t.Errorf("leader: %s %q", w.h.Get("X-Cache"), w.body.String())
	}
	r := httptest.NewRecorder()
	h.ServeHTTP(r, httptest.NewRequest("GET", "/events", nil))
	if r.Header().Get("X-Cache") != Hit || r.Body.String() != "data: one\n\ndata: two\n\n" {
		t.Errorf("then: %s %q, want the stored stream", r.Header().Get("X-Cache"), r.Body.String())
	}
}

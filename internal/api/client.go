package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"time"

	"moat/internal/store"
)

// Client calls the API: over the control socket when a daemon runs, or
// in-process on the store when none does, through the same handlers.
type Client struct {
	http *http.Client
	// Daemon is true when the client talks to a running daemon.
	Daemon bool
}

// DialControl returns a client for the daemon at the socket path, or an
// error wrapping ErrNoDaemon when none answers there.
func DialControl(ctx context.Context, path string) (*Client, error) {
	c, err := (&net.Dialer{Timeout: 2 * time.Second}).DialContext(ctx, "unix", path)
	switch {
	case errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED):
		// No socket, or one left by a daemon that is gone.
		return nil, fmt.Errorf("%w at %s: %v", ErrNoDaemon, path, err)
	case errors.Is(err, syscall.EACCES) || errors.Is(err, syscall.EPERM):
		return nil, fmt.Errorf("control socket %s: %w: it is root only: run moat as root (sudo moat)", path, err)
	case err != nil:
		// A daemon may run (busy, or a timeout): going around it to the
		// store would store changes it does not apply.
		return nil, fmt.Errorf("control socket %s: %w: a daemon may be running but not answering: try again, or restart it", path, err)
	}
	c.Close()
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}
	return &Client{http: &http.Client{Transport: tr}, Daemon: true}, nil
}

// ErrNoDaemon means no daemon answers on the control socket.
var ErrNoDaemon = errors.New("no moat daemon")

// Local returns a client that runs the handlers in this process, as the
// given actor.
func Local(h http.Handler, who store.Actor) *Client {
	return &Client{http: &http.Client{Transport: inProcess{h: h, actor: who}}}
}

type inProcess struct {
	h     http.Handler
	actor store.Actor
}

// RoundTrip runs the handler beside the caller, so that a streamed
// answer reaches it line by line as the handler writes.
func (t inProcess) RoundTrip(r *http.Request) (*http.Response, error) {
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, req: r, ready: make(chan *http.Response, 1)}
	w.read = pr
	go func() {
		defer pw.Close()
		t.h.ServeHTTP(w, r.WithContext(OnTheBox(WithActor(r.Context(), t.actor))))
		w.WriteHeader(http.StatusOK)
	}()
	return <-w.ready, nil
}

// pipeResponse is a ResponseWriter whose body is read as it is written.
type pipeResponse struct {
	header http.Header
	body   *io.PipeWriter
	read   *io.PipeReader
	req    *http.Request
	ready  chan *http.Response
	once   sync.Once
}

func (p *pipeResponse) Header() http.Header { return p.header }

func (p *pipeResponse) WriteHeader(code int) {
	p.once.Do(func() {
		p.ready <- &http.Response{StatusCode: code, Status: fmt.Sprintf("%d %s", code, http.StatusText(code)),
			Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, Header: p.header.Clone(), Body: p.read, Request: p.req, ContentLength: -1}
	})
}

func (p *pipeResponse) Write(b []byte) (int, error) {
	p.WriteHeader(http.StatusOK)
	return p.body.Write(b)
}

// Flush is a no-op: every write reaches the reader.
func (p *pipeResponse) Flush() {}

// APIError is a refusal from the API, with every field it names.
type APIError struct {
	Status int
	Body   Error
}

func (e *APIError) Error() string {
	if len(e.Body.Error.Fields) == 0 {
		return e.Body.Error.Message
	}
	var b strings.Builder
	b.WriteString("refused, nothing was changed:")
	for _, f := range e.Body.Error.Fields {
		fmt.Fprintf(&b, "\n  %s: %q %s: %s", f.Field, f.Value, f.Message, f.Fix)
	}
	return b.String()
}

// Do sends a request with body (JSON-encoded unless it is []byte) and
// decodes the JSON answer into out.
func (c *Client) Do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body, "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("moat daemon: read answer: %w", err)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return fmt.Errorf("moat daemon: decode answer: %w", err)
		}
	}
	return nil
}

// Stream is Do for an answer streamed as NDJSON: each line goes to
// line as it comes. An answer that is not streamed (a refusal) is an
// error as in Do.
func (c *Client) Stream(ctx context.Context, method, path string, body any, line func([]byte) error) error {
	resp, err := c.send(ctx, method, path, body, NDJSON)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		if err := line(sc.Bytes()); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("moat daemon: read answer: %w", err)
	}
	return nil
}

// send makes a request and returns a successful answer, or the refusal
// as an *APIError.
func (c *Client) send(ctx context.Context, method, path string, body any, accept string) (*http.Response, error) {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://moat"+path, rd)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("moat daemon: %w", err)
	}
	if resp.StatusCode < 300 {
		return resp, nil
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("moat daemon: read answer: %w", err)
	}
	e := &APIError{Status: resp.StatusCode}
	if err := json.Unmarshal(data, &e.Body); err != nil || e.Body.Error.Message == "" {
		e.Body.Error.Message = fmt.Sprintf("%s: %s", resp.Status, strings.TrimSpace(string(data)))
	}
	return nil, e
}

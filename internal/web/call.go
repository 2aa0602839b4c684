package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"moat/internal/api"
)

// The dashboard changes nothing itself: every page asks the API, in this
// process, as the signed-in browser (its cookie, its CSRF token, its
// address), so that the API decides what the account may do, records it
// as the account's, and refuses in the words the CLI shows too.

// refusal is the API's answer to a request it did not do.
type refusal struct {
	status  int
	problem api.Problem
}

func (e *refusal) Error() string {
	p := e.problem
	if len(p.Fields) > 1 {
		parts := make([]string, len(p.Fields))
		for i, f := range p.Fields {
			parts[i] = fieldText(f.Field, f.Value, f.Message, f.Fix)
		}
		return strings.Join(parts, "; ")
	}
	if p.Field != "" && !strings.Contains(p.Message, p.Field) {
		return fieldText(p.Field, p.Value, p.Message, p.Fix)
	}
	return p.Message
}

func fieldText(field, value, message, fix string) string {
	s := field
	if value != "" {
		s += " " + fmt.Sprintf("%q", value)
	}
	s += " " + message
	if fix != "" {
		s += ": " + fix
	}
	return s
}

// recorder keeps the API's answer.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (w *recorder) Header() http.Header { return w.header }
func (w *recorder) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
}
func (w *recorder) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// call sends one API request as the browser behind r and decodes the
// answer into out (when not nil). A refusal is a *refusal.
func (d *Dashboard) call(r *http.Request, method, path string, in, out any) error {
	return d.callFor(nil, r, method, path, in, out)
}

// callFor is call for a change that may give the session a new cookie
// (a new password, a new second factor): the API's Set-Cookie goes on to
// the browser through w.
func (d *Dashboard) callFor(w http.ResponseWriter, r *http.Request, method, path string, in, out any) error {
	var body io.Reader = http.NoBody
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("web: encode %s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(r.Context(), method, path, body)
	if err != nil {
		return fmt.Errorf("web: %s %s: %w", method, path, err)
	}
	req.RemoteAddr, req.TLS, req.Host = r.RemoteAddr, r.TLS, r.Host
	for _, h := range []string{"Cookie", "User-Agent", "X-Forwarded-For", "X-Real-Ip", "Cf-Connecting-Ip"} {
		if v, ok := r.Header[h]; ok {
			req.Header[h] = v
		}
	}
	req.Header.Set("Content-Type", "application/json")
	if csrf := r.PostFormValue("csrf"); csrf != "" {
		req.Header.Set(api.CSRFHeader, csrf)
	}
	rec := &recorder{header: http.Header{}}
	d.API.ServeHTTP(rec, req)
	if c := rec.header.Values("Set-Cookie"); len(c) > 0 && w != nil {
		for _, v := range c {
			w.Header().Add("Set-Cookie", v)
		}
	}
	if w := rec; w.status >= 400 {
		var e api.Error
		if err := json.Unmarshal(w.body.Bytes(), &e); err != nil || e.Error.Message == "" {
			return &refusal{status: w.status, problem: api.Problem{Message: fmt.Sprintf("%s %s: %d %s", method, path, w.status, strings.TrimSpace(w.body.String()))}}
		}
		return &refusal{status: w.status, problem: e.Error}
	}
	if out != nil {
		if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
			return fmt.Errorf("web: %s %s: the answer: %w", method, path, err)
		}
	}
	return nil
}

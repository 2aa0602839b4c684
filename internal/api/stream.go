package api

import (
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// NDJSON is the media type of a streamed answer: one JSON value a line,
// the last one the outcome. A caller asks for it with Accept.
const NDJSON = "application/x-ndjson"

func wantsStream(r *http.Request) bool {
	return strings.Contains(r.Header.Get("Accept"), NDJSON)
}

// stream writes a streamed answer, a line at a time, each sent as it is
// written. Progress lines come at most every tick; the outcome always.
type stream struct {
	w       http.ResponseWriter
	tick    time.Duration
	started bool
	last    time.Time
	held    any // the newest progress line not sent yet
}

// progress sends v unless a progress line went less than a tick ago;
// then v waits for the next one, or for the outcome.
func (s *stream) progress(v any) {
	now := time.Now()
	if s.started && now.Sub(s.last) < s.tick {
		s.held = v
		return
	}
	s.last, s.held = now, nil
	s.write(v)
}

// send sends v, after any progress line held back.
func (s *stream) send(v any) {
	if s.held != nil {
		s.write(s.held)
		s.held = nil
	}
	s.write(v)
}

func (s *stream) write(v any) {
	if !s.started {
		s.w.Header().Set("Content-Type", NDJSON)
		s.w.Header().Set("Cache-Control", "no-store")
		s.w.WriteHeader(http.StatusOK)
		s.started = true
	}
	json.NewEncoder(s.w).Encode(v)
	http.NewResponseController(s.w).Flush()
}

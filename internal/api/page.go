package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Lists are paged by ?limit= and ?offset=; the body stays a plain JSON
// array, and the headers say where it stands: X-Total-Count, and a Link
// with rel="next" while more are left.
const (
	defaultPage = 100
	maxPage     = 1000
)

// page writes the part of list that r asks for.
func page[T any](s *Server, w http.ResponseWriter, r *http.Request, list []T) {
	limit, offset, err := pageOf(r.URL.Query())
	if err != nil {
		s.fail(w, err)
		return
	}
	total := len(list)
	lo := min(offset, total)
	hi := min(lo+limit, total)
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	if hi < total {
		q := r.URL.Query()
		q.Set("limit", strconv.Itoa(limit))
		q.Set("offset", strconv.Itoa(hi))
		w.Header().Set("Link", fmt.Sprintf(`<%s?%s>; rel="next"`, r.URL.Path, q.Encode()))
	}
	out := list[lo:hi]
	if out == nil {
		out = []T{}
	}
	writeJSON(w, http.StatusOK, out)
}

func pageOf(q url.Values) (limit, offset int, err error) {
	limit, offset = defaultPage, 0
	if v := q.Get("limit"); v != "" {
		if limit, err = strconv.Atoi(v); err != nil || limit < 1 || limit > maxPage {
			return 0, 0, inputError{fmt.Errorf("limit: %q is not a page size: give a whole number from 1 to %d", v, maxPage)}
		}
	}
	if v := q.Get("offset"); v != "" {
		if offset, err = strconv.Atoi(v); err != nil || offset < 0 {
			return 0, 0, inputError{fmt.Errorf("offset: %q is not a position: give a whole number from 0", v)}
		}
	}
	return limit, offset, nil
}

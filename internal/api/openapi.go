package api

import (
	_ "embed"
	"net/http"
)

// openAPIDoc is the OpenAPI 3.1 description of every route, the Server's
// and the Remote's. It is written by hand; TestOpenAPIListsEveryRoute
// fails when a route is added or removed without it.
//
//go:embed openapi.json
var openAPIDoc []byte

// openAPI serves the description of the routes. It is public on the
// HTTPS API too: it says what the routes are, not what is behind them.
func (s *Server) openAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Write(openAPIDoc)
}

package api

import (
	"bytes"
	"context"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"

	"moat/internal/store"
)

// TestOpenAPIValid: the served document is OpenAPI 3.1 by the
// specification's own schema, and builds into a model.
func TestOpenAPIValid(t *testing.T) {
	doc, err := libopenapi.NewDocument(openAPIDoc)
	if err != nil {
		t.Fatal(err)
	}
	if v := doc.GetSpecInfo().Version; v != "3.1.0" {
		t.Errorf("openapi.json is OpenAPI %q, want 3.1.0", v)
	}
	if _, err := doc.BuildV3Model(); err != nil {
		t.Fatalf("openapi.json does not build: %v", err)
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("openapi.json: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("openapi.json line %d: %s: %s", e.SpecLine, e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  line %d: %s: %s", se.Line, se.FieldPath, se.Reason)
			}
		}
	}
}

// TestOpenAPIListsEveryRoute: every route the package registers, on the
// Server's mux and the Remote's, is in the document, and every
// operation of the document is a route.
func TestOpenAPIListsEveryRoute(t *testing.T) {
	documented := documentedRoutes(t)
	registered := registeredRoutes(t)

	var missing, extra []string
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			missing = append(missing, r)
		}
	}
	for _, r := range documented {
		if !slices.Contains(registered, r) {
			extra = append(extra, r)
		}
	}
	if len(missing) > 0 {
		t.Errorf("routes missing from openapi.json:\n  %s", strings.Join(missing, "\n  "))
	}
	if len(extra) > 0 {
		t.Errorf("operations in openapi.json that no route serves:\n  %s", strings.Join(extra, "\n  "))
	}

	// The source says what is registered; the muxes must agree: each
	// documented operation reaches the route of that very pattern.
	srv := (&Server{}).Handler().(*http.ServeMux)
	remote := http.NewServeMux()
	rm := &Remote{API: &Server{}}
	rm.authRoutes(remote)
	rm.passkeyRoutes(remote)
	param := regexp.MustCompile(`\{\w+\}`)
	for _, want := range documented {
		method, path, _ := strings.Cut(want, " ")
		r := httptest.NewRequest(method, param.ReplaceAllString(path, "x"), nil)
		_, got := srv.Handler(r)
		if got != want {
			_, got = remote.Handler(r)
		}
		if got != want {
			t.Errorf("%s is documented but reaches %q", want, got)
		}
	}
}

// documentedRoutes is each operation of openapi.json as a mux pattern,
// "METHOD /path/{param}".
func documentedRoutes(t *testing.T) []string {
	t.Helper()
	var doc struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatal(err)
	}
	var out []string
	for path, item := range doc.Paths {
		for method := range item {
			switch method {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				out = append(out, strings.ToUpper(method)+" "+path)
			}
		}
	}
	slices.Sort(out)
	return out
}

// registeredRoutes is each pattern with a method that the package's
// source hands to a mux's Handle or HandleFunc. The muxes cannot list
// their patterns, and reading the source finds the Remote's routes and
// those registered only when accounts are open alike. The catch-alls
// ("/", "/v1/") take no method and are not routes of their own.
func registeredRoutes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	var out []string
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) != 2 {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || (sel.Sel.Name != "HandleFunc" && sel.Sel.Name != "Handle") {
				return true
			}
			lit, ok := call.Args[0].(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				t.Errorf("%s: a route whose pattern is not a literal cannot be checked against openapi.json", fset.Position(call.Pos()))
				return true
			}
			pattern, err := strconv.Unquote(lit.Value)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(pattern, " ") && !slices.Contains(out, pattern) {
				out = append(out, pattern)
			}
			return true
		})
	}
	if len(out) == 0 {
		t.Fatal("found no routes in the package's source")
	}
	slices.Sort(out)
	return out
}

// TestOpenAPIServed: the document is served as is, over the control
// socket's client and to anyone over HTTPS, signed in or not.
func TestOpenAPIServed(t *testing.T) {
	srv := &Server{}
	var got json.RawMessage
	if err := Local(srv.Handler(), store.Actor{Who: "test", From: "test"}).Do(context.Background(), "GET", "/v1/openapi.json", nil, &got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, bytes.TrimSpace(openAPIDoc)) {
		t.Error("GET /v1/openapi.json is not the embedded document")
	}

	rg := newRemote(t)
	resp, err := rg.srv.Client().Get(rg.srv.URL + "/v1/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /v1/openapi.json over HTTPS, not signed in: %s, want 200", resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
}

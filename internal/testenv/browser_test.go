package testenv

import (
	"html"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/chromedp/chromedp"
)

var browser SharedBrowser

func TestMain(m *testing.M) {
	code := m.Run()
	browser.Close()
	os.Exit(code)
}

// TestBrowser: the shared Chromium renders a page, submits its form
// without script, and keeps each tab's cookies to itself.
func TestBrowser(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "seen", Value: "yes"})
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write([]byte(`<!doctype html><title>moat test</title><form method="post" action="/hello"><input name="who" id="who"><button id="go">Go</button></form>`))
	})
	mux.HandleFunc("POST /hello", func(w http.ResponseWriter, r *http.Request) {
		c, err := r.Cookie("seen")
		seen := err == nil && c.Value == "yes"
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if seen {
			w.Write([]byte(`<!doctype html><p id="out">hello ` + html.EscapeString(r.PostFormValue("who")) + `</p>`))
		} else {
			w.Write([]byte(`<!doctype html><p id="out">no cookie</p>`))
		}
	})
	mux.HandleFunc("GET /cookie", func(w http.ResponseWriter, r *http.Request) {
		_, err := r.Cookie("seen")
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		if err == nil {
			w.Write([]byte(`<!doctype html><p id="out">shared</p>`))
		} else {
			w.Write([]byte(`<!doctype html><p id="out">own</p>`))
		}
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	b := browser.Get(t)
	tab := b.Tab(t)
	if err := chromedp.Do(tab, chromedp.Navigate(srv.URL+"/")); err != nil {
		t.Fatal(err)
	}
	title, err := chromedp.Run(tab, chromedp.Title())
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.SendKeys(chromedp.ID("who"), "owner"), chromedp.Click(chromedp.ID("go"))); err != nil {
		t.Fatal(err)
	}
	out, err := chromedp.Run(tab, chromedp.Text(chromedp.ID("out")))
	if err != nil {
		t.Fatal(err)
	}
	if title != "moat test" || out != "hello owner" {
		t.Errorf("title %q, after the form %q", title, out)
	}
	other := b.Tab(t)
	if err := chromedp.Do(other, chromedp.Navigate(srv.URL+"/cookie")); err != nil {
		t.Fatal(err)
	}
	if out, err = chromedp.Run(other, chromedp.Text(chromedp.ID("out"))); err != nil || out != "own" {
		t.Errorf("a second tab sees the first one's cookie: %q %v", out, err)
	}
}

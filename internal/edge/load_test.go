package edge

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Swapping the routing table under load fails no request and makes a new
// host reachable at once.
func TestLoadSwapUnderLoad(t *testing.T) {
	upA := startApp(t, text("A"))
	upB := startApp(t, text("B"))
	appA := app("a", upA, nil, "a.localhost")
	te := startEdge(t, state("", appA))
	clients := []*http.Client{te.client(false), te.client(true)}

	if resp, _ := get(t, clients[0], "https://b.localhost/", ""); resp.StatusCode != 404 {
		t.Fatalf("b.localhost before it is added: %d, want 404", resp.StatusCode)
	}

	var ok, failed atomic.Int64
	var mu sync.Mutex
	var failures []string
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 6 {
		c := clients[i%len(clients)]
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				if err := fetch(c, "https://a.localhost/", "A"); err != nil {
					failed.Add(1)
					mu.Lock()
					if len(failures) < 5 {
						failures = append(failures, err.Error())
					}
					mu.Unlock()
					continue
				}
				ok.Add(1)
			}
		})
	}
	waitFor := func(n int64) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for ok.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d requests succeeded in 10 s", ok.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	halt := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer halt()

	waitFor(50)
	// Many swaps while requests are in flight, some of them changing A
	// itself, the last one adding B.
	for i := range 50 {
		a := appA
		if i%2 == 0 {
			a.Headers = map[string]string{"X-Frame-Options": "DENY"}
		}
		if err := te.Load(state("", a)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * time.Millisecond)
	}
	before := ok.Load()
	if err := te.Load(state("", appA, app("b", upB, nil, "b.localhost"))); err != nil {
		t.Fatal(err)
	}
	for _, c := range clients {
		if err := fetch(c, "https://b.localhost/", "B"); err != nil {
			t.Errorf("b.localhost right after Load: %v", err)
		}
	}
	waitFor(before + 50)

	halt()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d requests to a.localhost failed across the swaps, first ones: %q", n, n+ok.Load(), failures)
	}
	t.Logf("%d requests to a.localhost across 51 swaps", ok.Load())
}

// fetch GETs url and checks for a 200 with body want.
func fetch(c *http.Client, url, want string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("GET %s: %w", url, err)
	}
	if resp.StatusCode != 200 || string(b) != want {
		return fmt.Errorf("GET %s: %d %q, want 200 %q", url, resp.StatusCode, b, want)
	}
	return nil
}

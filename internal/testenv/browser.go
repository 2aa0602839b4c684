package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Browser is one headless Chromium, started once for a package's tests
// (a browser costs a second and 100 MB to start): each test gets a tab
// of its own browser context, so tests share no cookies.
type Browser struct {
	cancelAlloc, cancel context.CancelFunc
	ctx                 context.Context
}

// chromiumPaths are where Debian and others put Chromium.
var chromiumPaths = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"}

// StartBrowser starts headless Chromium.
func StartBrowser() (*Browser, error) {
	path := ""
	for _, p := range chromiumPaths {
		if found, err := exec.LookPath(p); err == nil {
			path = found
			break
		}
	}
	if path == "" {
		return nil, errors.New("headless Chromium is missing (Debian package chromium; make test's scripts/test-deps.sh installs it)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.Flag("disable-dev-shm-usage", true),
		// Tests serve HTTPS with certificates of their own making.
		chromedp.Flag("ignore-certificate-errors", true),
		// Their hosts are names under .test, on loopback.
		chromedp.Flag("host-resolver-rules", "MAP *.test 127.0.0.1"),
	)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses its sandbox as root
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		cancel()
		cancelAlloc()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	return &Browser{cancelAlloc: cancelAlloc, cancel: cancel, ctx: ctx}, nil
}

// Tab is a new tab in a browser context of its own, closed when the test
// ends. The test fails on any error the page's console shows: a script's
// exception, a refused resource, a Content-Security-Policy violation.
func (b *Browser) Tab(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx, chromedp.WithNewBrowserContext())
	if err := chromedp.Do(ctx); err != nil {
		cancel()
		t.Fatalf("testenv: open a tab: %v", err)
	}
	var (
		mu     sync.Mutex
		errs   []string
		closed = make(chan struct{})
	)
	messages := chromedp.Console(ctx)
	go func() {
		defer close(closed)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				mu.Lock()
				errs = append(errs, m.String())
				mu.Unlock()
			}
		}
	}()
	// Every step of the test in this tab ends within TabTimeout, so that a
	// page that never shows what the test waits for fails it.
	bounded, cancelBounded := context.WithTimeout(ctx, TabTimeout)
	t.Cleanup(func() {
		cancelBounded()
		cancel()
		<-closed
		mu.Lock()
		defer mu.Unlock()
		for _, e := range errs {
			t.Errorf("the browser's console: %s", e)
		}
	})
	return bounded
}

// TabTimeout bounds the whole of a tab's work.
const TabTimeout = 30 * time.Second

// ScreenshotsEnv names a directory that screenshots are copied to as
// well: `MOAT_SCREENSHOTS=$PWD/docs/screenshots go test ./internal/web`
// refreshes the README's.
const ScreenshotsEnv = "MOAT_SCREENSHOTS"

// Screenshot saves the tab's whole page as name.png in dir (a test's
// temp dir) and returns its path.
func Screenshot(t testing.TB, tab context.Context, dir, name string) string {
	t.Helper()
	img, err := chromedp.Run(tab, chromedp.FullScreenshot(100)) // 100: PNG
	if err != nil {
		t.Fatalf("testenv: screenshot: %v", err)
	}
	path := filepath.Join(dir, name+".png")
	for _, p := range []string{path, filepath.Join(os.Getenv(ScreenshotsEnv), name+".png")} {
		if p == path || os.Getenv(ScreenshotsEnv) != "" {
			if err := os.WriteFile(p, img, 0o644); err != nil {
				t.Fatalf("testenv: screenshot: %v", err)
			}
		}
	}
	return path
}

// Close stops the browser and its processes.
func (b *Browser) Close() {
	b.cancel()
	b.cancelAlloc()
}

// SharedBrowser is the one browser of a package's tests: declare one in
// the test package, take it with Get in each test, and Close it in
// TestMain after m.Run.
type SharedBrowser struct {
	once sync.Once
	b    *Browser
	err  error
}

// Get returns the browser, starting it at the first call; a test without
// one fails and says what is missing.
func (s *SharedBrowser) Get(t testing.TB) *Browser {
	t.Helper()
	s.once.Do(func() { s.b, s.err = StartBrowser() })
	if s.err != nil {
		t.Fatalf("testenv: %v", s.err)
	}
	return s.b
}

// Close stops the browser if it was started.
func (s *SharedBrowser) Close() {
	if s.b != nil {
		s.b.Close()
	}
}

// Command guard measures moat's sshd matcher against fail2ban's on the
// same generated auth log, and checks both against what the generator
// knows it wrote.
//
// It writes a syslog-style auth.log from a fixed seed (bots guessing
// passwords from tens of thousands of IPv4 and IPv6 addresses, scanners,
// real logins, cron), reads it back through guard.SSHD, the filter moat's
// sshd jail runs, on one core (GOMAXPROCS=1; run it under taskset), then
// runs Debian's fail2ban-regex with the stock filter.d/sshd.conf on the
// same file, pinned to the same core, and prints both speeds, their ratio
// and what each matched, shape by shape. bench/guard.sh sets it up.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"moat/internal/guard"
)

func main() {
	var (
		log      = flag.String("log", "auth.log", "where to write the generated log")
		n        = flag.Int("lines", 750_000, "how many lines to generate")
		seed     = flag.Uint64("seed", 1, "the generator's seed")
		passes   = flag.Int("passes", 5, "how many times moat reads the file (the median counts)")
		f2bRoot  = flag.String("fail2ban", "", "a dpkg-deb -x of Debian's fail2ban package; empty: moat only")
		python   = flag.String("python", "/usr/bin/python3", "the Python that runs fail2ban-regex")
		cpu      = flag.Int("cpu", 1, "the core fail2ban-regex is pinned to (pin this program there too, with taskset)")
		checkAll = flag.Bool("check-all", false, "let fail2ban-regex try every regex on every line (its default; fail2ban-server stops at the first match)")
	)
	flag.Parse()
	runtime.GOMAXPROCS(1)
	if err := run(*log, *n, *seed, *passes, *f2bRoot, *python, *cpu, *checkAll); err != nil {
		fmt.Fprintln(os.Stderr, "guard:", err)
		os.Exit(1)
	}
}

func run(log string, n int, seed uint64, passes int, f2bRoot, python string, cpu int, checkAll bool) error {
	g := newGenerator(seed)
	start := time.Now()
	truth, perLine, err := g.write(log, n)
	if err != nil {
		return err
	}
	fmt.Printf("log: %s, %s lines from seed %d (written in %.1f s), %s distinct attacking addresses to pick from\n",
		log, commas(truth.lines), seed, time.Since(start).Seconds(), commas(len(g.bots)))
	fmt.Printf("this process: GOMAXPROCS=%d, allowed CPUs %s, %s\n\n", runtime.GOMAXPROCS(0), allowedCPUs(), runtime.Version())

	var runs []matchRun
	for range max(passes, 1) {
		r, err := matchFile(log, nil)
		if err != nil {
			return err
		}
		runs = append(runs, r)
	}
	slices.SortFunc(runs, func(a, b matchRun) int { return int(a.elapsed - b.elapsed) })
	moat := runs[len(runs)/2]
	withDet, err := matchFile(log, guard.NewDetector("sshd", guard.DefaultPolicy(), nil))
	if err != nil {
		return err
	}
	check, err := checkMoat(log, perLine)
	if err != nil {
		return err
	}

	fmt.Printf("moat     guard.SSHD.Match, one string per line as guard.Tail hands them on\n")
	fmt.Printf("         %12s lines/s   (%s lines in %.3f s, the median of %d passes; fastest %.3f s, slowest %.3f s)\n",
		commas(int(moat.rate())), commas(moat.lines), moat.elapsed.Seconds(), len(runs), runs[0].elapsed.Seconds(), runs[len(runs)-1].elapsed.Seconds())
	fmt.Printf("         %12s lines/s   with Detector.Observe on each match too, as moat's sshd jail does\n", commas(int(withDet.rate())))
	fmt.Printf("         failures came from %s IPv4 addresses and %s IPv6 addresses in %s /64s\n", commas(check.v4), commas(check.v6), commas(check.v6nets))

	var f2b fail2banResult
	if f2bRoot != "" {
		f2b, err = runFail2ban(f2bRoot, python, log, cpu, checkAll)
		if err != nil {
			return err
		}
		mode := "--no-check-all: stops at the first regex that matches, as fail2ban-server does"
		if checkAll {
			mode = "every regex on every line (fail2ban-regex's default)"
		}
		rate := float64(f2b.lines) / f2b.processed.Seconds()
		fmt.Printf("fail2ban %s, filter.d/sshd.conf as shipped (mode normal), %s\n", f2b.version, mode)
		fmt.Printf("         %12s lines/s   (%s lines processed in %.2f s by its own count; %.1f s with Python's start) on %s\n",
			commas(int(rate)), commas(f2b.lines), f2b.processed.Seconds(), f2b.wall.Seconds(), f2b.python)
		fmt.Printf("         command: PYTHONPATH=%s/usr/lib/python3/dist-packages %s\n", f2bRoot, strings.Join(f2b.args, " "))
		fmt.Printf("\nmoat ÷ fail2ban: %.0f× the lines per second on one core\n", moat.rate()/rate)
	}
	fmt.Printf("\nmatched lines: moat %s", commas(moat.matched))
	if f2bRoot != "" {
		fmt.Printf(", fail2ban %s (the lines it counts as failures", commas(f2b.matched))
		if f2b.ignored > 0 {
			fmt.Printf("; it also matched %s lines it does not count, its \"ignored\"", commas(f2b.ignored))
		}
		fmt.Print(")")
	}
	fmt.Println()
	fmt.Println("moat by kind:")
	for _, k := range sortedKeys(moat.kinds) {
		fmt.Printf("  %-30s %10s\n", k, commas(moat.kinds[k]))
	}

	agree := report(truth, check, f2b, f2bRoot != "")
	if check.wrong > 0 {
		return fmt.Errorf("moat's filter disagreed with the generator on %d lines (see above)", check.wrong)
	}
	if !agree {
		return fmt.Errorf("fail2ban's counts differ from what the generator expects of its filter (see above)")
	}
	return nil
}

// matchRun is one pass of moat's filter over the file.
type matchRun struct {
	lines, matched int
	kinds          map[string]int
	elapsed        time.Duration
}

func (r matchRun) rate() float64 { return float64(r.lines) / r.elapsed.Seconds() }

// matchFile reads path line by line through guard.SSHD, and through det
// as well when it is not nil. The time includes reading the file (from
// the page cache: the generator has just written it) and making a
// string of each line, as guard.Tail does.
func matchFile(path string, det *guard.Detector) (matchRun, error) {
	f, err := os.Open(path)
	if err != nil {
		return matchRun{}, err
	}
	defer f.Close()
	r := matchRun{kinds: map[string]int{}}
	var filter guard.SSHD
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	start := time.Now()
	for sc.Scan() {
		line := string(sc.Bytes())
		r.lines++
		a, ok := filter.Match(line)
		if !ok {
			continue
		}
		r.matched++
		r.kinds[a.Kind]++
		if det != nil {
			det.Observe(a, line, time.Now())
		}
	}
	r.elapsed = time.Since(start)
	return r, sc.Err()
}

// moatCheck is moat's filter held against the generator, line by line.
type moatCheck struct {
	matched [nShapes]int // lines of each shape the filter matched
	wrong   int          // lines matched when they should not be, missed, or given another kind
	// conns and portless are what moat's detector would count: the
	// matches of distinct addresses and ports within FindTime (it counts
	// a connection once), and the matches without a port, each of which
	// it counts.
	conns, portless int
	// v4, v6 and v6nets are the distinct addresses (and IPv6 /64s) of
	// the failures.
	v4, v6, v6nets int
}

// checkMoat runs the filter over the file again, untimed, with the shape
// of each line from the generator.
func checkMoat(path string, perLine []uint8) (moatCheck, error) {
	var c moatCheck
	f, err := os.Open(path)
	if err != nil {
		return c, err
	}
	defer f.Close()
	var filter guard.SSHD
	window := guard.DefaultPolicy().FindTime
	seen := map[netip.AddrPort]time.Time{}
	addrs, nets := map[netip.Addr]bool{}, map[netip.Prefix]bool{}
	sc := bufio.NewScanner(f)
	for i := 0; sc.Scan(); i++ {
		line := sc.Text()
		sh := shapes[perLine[i]]
		a, ok := filter.Match(line)
		if ok != (sh.moat != "") || (ok && a.Kind != sh.moat) {
			if c.wrong < 5 {
				fmt.Printf("moat disagrees with the generator (%s, want %q): got %q %v on %q\n", sh.name, sh.moat, a.Kind, ok, line)
			}
			c.wrong++
		}
		if !ok {
			continue
		}
		c.matched[perLine[i]]++
		if !addrs[a.Addr] {
			addrs[a.Addr] = true
			if a.Addr.Is4() {
				c.v4++
			} else {
				c.v6++
				if p, _ := a.Addr.Prefix(64); !nets[p] {
					nets[p] = true
					c.v6nets++
				}
			}
		}
		if a.Port == 0 {
			c.portless++
			continue
		}
		// The detector counts a connection once within FindTime, by
		// the time it reads the line; here that is the line's stamp.
		at, err := time.Parse(time.Stamp, line[:len(time.Stamp)])
		if err != nil {
			return c, fmt.Errorf("line %d: %v", i+1, err)
		}
		ap := netip.AddrPortFrom(a.Addr, a.Port)
		if last, ok := seen[ap]; !ok || at.Sub(last) >= window {
			seen[ap] = at
			c.conns++
		}
	}
	return c, sc.Err()
}

// report prints the ground truth shape by shape beside what each side
// made of it, and explains where they part. It reports whether fail2ban's
// counts are the ones the ground truth predicts (true without fail2ban).
func report(t truth, c moatCheck, f2b fail2banResult, haveF2B bool) bool {
	fmt.Printf("\nshape by shape (written: the generator's count, the ground truth):\n")
	fmt.Printf("  %-84s %9s %9s  %-28s %s\n", "line", "written", "moat", "moat's kind", "fail2ban (mode normal)")
	for i, sh := range shapes {
		if t.shapes[i] == 0 {
			continue
		}
		f := "no regex matches it"
		switch {
		case sh.f2bFails:
			f = "a failure"
		case sh.f2b != "":
			f = "matched, not a failure"
		}
		kind := sh.moat
		if kind == "" {
			kind = "-"
		}
		fmt.Printf("  %-84s %9s %9s  %-28s %s\n", sh.name, commas(t.shapes[i]), commas(c.matched[i]), kind, f)
	}

	var both, moatOnly, f2bOnly, f2bIgnored, f2bRegexIgnored int
	for i, sh := range shapes {
		switch {
		case sh.moat != "" && sh.f2bFails:
			both += t.shapes[i]
		case sh.moat != "":
			moatOnly += t.shapes[i]
		case sh.f2bFails:
			f2bOnly += t.shapes[i]
		}
		if f2b.checkAll && sh.f2b != "" && !sh.f2bFails {
			f2bIgnored += t.shapes[i]
		}
		if f2b.checkAll && sh.f2bFails && sh.f2bAlso != "" {
			f2bRegexIgnored += t.shapes[i]
		}
	}
	bothMoat := 0
	for i, sh := range shapes {
		if sh.moat != "" && sh.f2bFails {
			bothMoat += c.matched[i]
		}
	}
	fmt.Printf("\nfailure lines of the kinds both count: %s written; moat matched %s", commas(both), commas(bothMoat))
	if haveF2B {
		fmt.Printf(", fail2ban %s", commas(f2b.matched))
		if f2bOnly > 0 {
			fmt.Printf(" (of which %s of kinds only it counts)", commas(f2bOnly))
		}
	}
	fmt.Println()
	fmt.Printf("failure lines only moat counts: %s written, moat matched %s\n", commas(moatOnly), commas(c.matchedTotal()-bothMoat))
	for i, sh := range shapes {
		if sh.moat != "" && !sh.f2bFails && t.shapes[i] > 0 {
			why := "fail2ban has no regex for it"
			if sh.f2b != "" {
				why = "fail2ban matches it as <F-NOFAIL>"
			}
			fmt.Printf("  %-84s %9s  (%s)\n", sh.name, commas(t.shapes[i]), why)
		}
	}

	fmt.Printf("\nfailed connections (written): %s. Counted as attempts by\n", commas(t.failedConns))
	fmt.Printf("  moat's detector: %s = %s distinct address+port among the matches within FindTime (one per connection) + %s matches without a port\n",
		commas(c.conns+c.portless), commas(c.conns), commas(c.portless))
	if haveF2B {
		fmt.Printf("  fail2ban:        %s = one per line it counts as a failure\n", commas(f2b.matched))
	}

	if !haveF2B {
		return true
	}
	// fail2ban's regexes: what the ground truth says each should have
	// matched, against what fail2ban-regex reports.
	fmt.Printf("\nfail2ban's regexes, hits expected from the written shapes against reported:\n")
	expect := map[string]int{}
	var unplaced []string
	place := func(piece string, n int) {
		key := ""
		for re := range f2b.hits {
			if strings.Contains(re, piece) {
				key = re
			}
		}
		if key == "" {
			unplaced = append(unplaced, piece)
			key = piece
		}
		expect[key] += n
	}
	for i, sh := range shapes {
		if sh.f2b == "" || t.shapes[i] == 0 || (!sh.f2bFails && !f2b.checkAll) {
			continue // without checkAll, fail2ban counts no hit for a line that is no failure
		}
		place(sh.f2b, t.shapes[i])
		if f2b.checkAll && sh.f2bAlso != "" {
			place(sh.f2bAlso, t.shapes[i])
		}
	}
	for re := range f2b.hits {
		if _, ok := expect[re]; !ok {
			expect[re] = 0
		}
	}
	agree := true
	for _, re := range sortedKeys(expect) {
		mark := "ok"
		if expect[re] != f2b.hits[re] {
			mark, agree = "DIFFERS", false
		}
		short := re
		if len(short) > 70 {
			short = short[:67] + "..."
		}
		fmt.Printf("  %-70s expected %9s  reported %9s  %s\n", short, commas(expect[re]), commas(f2b.hits[re]), mark)
	}
	wantMatched, wantIgnored := both+f2bOnly-f2bRegexIgnored, f2bIgnored+f2bRegexIgnored
	fmt.Printf("  failures: expected %s, reported %s; ignored: expected %s, reported %s; missed: expected %s, reported %s\n",
		commas(wantMatched), commas(f2b.matched), commas(wantIgnored), commas(f2b.ignored),
		commas(t.lines-wantMatched-wantIgnored), commas(f2b.missed))
	if f2bRegexIgnored > 0 {
		fmt.Printf("  (every regex on every line: %s failure lines that a second regex matches as <F-NOFAIL> are reported as ignored; fail2ban-server counts them)\n", commas(f2bRegexIgnored))
	}
	agree = agree && wantMatched == f2b.matched && wantIgnored == f2b.ignored && len(unplaced) == 0
	if agree {
		fmt.Println("  fail2ban agrees with the ground truth, regex by regex.")
	}
	return agree
}

func (c moatCheck) matchedTotal() int {
	n := 0
	for _, m := range c.matched {
		n += m
	}
	return n
}

func allowedCPUs() string {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return "?"
	}
	for l := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(l, "Cpus_allowed_list:"); ok {
			return strings.TrimSpace(v)
		}
	}
	return "?"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// commas writes n with thousands separators.
func commas(n int) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + commas(-n)
	}
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

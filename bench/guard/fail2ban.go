package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// fail2banResult is what fail2ban-regex said about the log.
type fail2banResult struct {
	version  string
	python   string
	args     []string
	checkAll bool
	// lines, ignored, matched and missed are its summary: matched are
	// the failures, ignored the lines a regex matched without a failure
	// (<F-NOFAIL> helpers, "Accepted"). Without checkAll, fail2ban stops
	// at such a line as soon as a regex says it is no failure, and counts
	// it neither as ignored nor as a hit of that regex, but as missed.
	lines, ignored, matched, missed int
	// processed is the time it reports for the lines alone; wall is the
	// whole run, Python's start and the filter's compilation included.
	processed, wall time.Duration
	// hits is how many lines each failregex matched, by its text.
	hits map[string]int
}

// runFail2ban runs fail2ban-regex from the tree root (a dpkg-deb -x of
// Debian's package) on log with the stock sshd filter, pinned to cpu.
// checkAll is fail2ban-regex's default: every regex is tried on every
// line, so that it can report lines two regexes match. fail2ban-server
// stops at the first match, so the benchmark passes --no-check-all
// unless told otherwise.
func runFail2ban(root, python, log string, cpu int, checkAll bool) (fail2banResult, error) {
	res := fail2banResult{python: python, checkAll: checkAll, hits: map[string]int{}}
	lib := filepath.Join(root, "usr/lib/python3/dist-packages")
	bin := filepath.Join(root, "usr/bin/fail2ban-regex")
	filter := filepath.Join(root, "etc/fail2ban/filter.d/sshd.conf")
	for _, p := range []string{lib, bin, filter} {
		if _, err := os.Stat(p); err != nil {
			return res, fmt.Errorf("fail2ban: %w (extract Debian's fail2ban package with dpkg-deb -x into %s)", err, root)
		}
	}
	env := append(os.Environ(), "PYTHONPATH="+lib)
	version := exec.Command(python, bin, "--version")
	version.Env = env
	if out, err := version.CombinedOutput(); err == nil {
		res.version = strings.TrimSpace(string(out))
	}
	if out, err := exec.Command(python, "--version").CombinedOutput(); err == nil {
		res.python = python + " (" + strings.TrimSpace(string(out)) + ")"
	}
	res.args = []string{"taskset", "-c", strconv.Itoa(cpu), python, bin, "--print-no-missed", "--print-no-ignored"}
	if !checkAll {
		res.args = append(res.args, "--no-check-all")
	}
	res.args = append(res.args, log, filter)
	cmd := exec.Command(res.args[0], res.args[1:]...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	res.wall = time.Since(start)
	if err != nil {
		return res, fmt.Errorf("fail2ban-regex: %v\n%s%s", err, stdout.Bytes(), stderr.Bytes())
	}
	if err := res.parse(stdout.String()); err != nil {
		return res, fmt.Errorf("fail2ban-regex: %v; its output:\n%s", err, stdout.Bytes())
	}
	return res, nil
}

var (
	// "Lines: 750000 lines, 351234 ignored, 250000 matched, 148766 missed"
	f2bLines = regexp.MustCompile(`(?m)^Lines: (\d+) lines, (\d+) ignored, (\d+) matched, (\d+) missed`)
	// "[processed in 51.20 sec]"
	f2bProcessed = regexp.MustCompile(`\[processed in ([0-9.]+) sec\]`)
	// "|   4) [12345] ^Failed ..." in the Failregex section
	f2bHit = regexp.MustCompile(`^\|\s+\d+\) \[(\d+)\] (.*)$`)
)

func (res *fail2banResult) parse(out string) error {
	m := f2bLines.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no \"Lines:\" summary")
	}
	for i, p := range []*int{&res.lines, &res.ignored, &res.matched, &res.missed} {
		*p, _ = strconv.Atoi(m[i+1])
	}
	m = f2bProcessed.FindStringSubmatch(out)
	if m == nil {
		return fmt.Errorf("no \"processed in\" time")
	}
	sec, _ := strconv.ParseFloat(m[1], 64)
	res.processed = time.Duration(sec * float64(time.Second))
	inFailregex := false
	for l := range strings.Lines(out) {
		l = strings.TrimRight(l, "\n")
		switch {
		case strings.HasPrefix(l, "Failregex:"):
			inFailregex = true
		case inFailregex && strings.HasPrefix(l, "`-"):
			inFailregex = false
		case inFailregex:
			if m := f2bHit.FindStringSubmatch(l); m != nil {
				res.hits[m[2]], _ = strconv.Atoi(m[1])
			}
		}
	}
	return nil
}

// Command summary reads the raw results of bench/run.sh (results.csv) and
// prints, per scenario and proxy, the median requests per second, the
// median p50 and p99 latency, the highest peak RSS, and moat's ratio to
// each other proxy: the median of the ratios within each round, because the
// machine's speed drifts between rounds but hardly within one.
//
// Runs during which other processes took a share of the CPUs (disturbed)
// are left out of the medians and the ratios, as long as clean runs remain;
// they are listed below each table.
package main

import (
	"encoding/csv"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
)

// run is one wrk run against one proxy.
type run struct {
	round          int
	scenario       string
	proxy          string
	rps            float64
	p50, p99       float64 // milliseconds
	peakRSSKB      float64
	non2xx, errors int
	// toOrigin is the share of the requests that reached the origin.
	toOrigin float64
	// busyProxy and busyLoad are how busy (percent) the proxy's CPU and
	// the load CPU (wrk and the origin) were during the run: which side
	// was the bottleneck.
	busyProxy, busyLoad float64
	// foreign is the share of both CPUs that went to neither the proxy,
	// the origin nor wrk: someone else's load, or the kernel's.
	foreign float64
}

func main() {
	base := flag.String("baseline", "moat", "the proxy whose ratio to the others is printed")
	disturbed := flag.Float64("disturbed", 10, "list runs during which other processes took more than this percentage of the CPUs")
	order := flag.String("proxies", "moat,nginx,nginx-nolock,caddy,haproxy", "the order of the rows")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: summary [-baseline moat] [-proxies a,b,c] results.csv")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	defer f.Close()
	runs, err := read(f)
	if err != nil {
		log.Fatalf("%s: %v", flag.Arg(0), err)
	}
	report(os.Stdout, runs, *base, strings.Split(*order, ","), *disturbed)
}

func read(r io.Reader) ([]run, error) {
	recs, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(recs) < 2 {
		return nil, fmt.Errorf("no results")
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	for _, name := range []string{"round", "scenario", "proxy", "requests_per_sec", "p50_ms", "p99_ms", "peak_rss_kb", "non_2xx_3xx", "socket_errors", "requests", "origin_requests", "proxy_cpu_busy_pct", "load_cpu_busy_pct", "foreign_cpu_pct"} {
		if _, ok := col[name]; !ok {
			return nil, fmt.Errorf("no column %q in the header", name)
		}
	}
	var out []run
	for i, rec := range recs[1:] {
		num := func(name string) float64 {
			v, perr := strconv.ParseFloat(rec[col[name]], 64)
			if perr != nil {
				err = fmt.Errorf("line %d, %s: %q is not a number", i+2, name, rec[col[name]])
			}
			return v
		}
		x := run{
			round:     int(num("round")),
			scenario:  rec[col["scenario"]],
			proxy:     rec[col["proxy"]],
			rps:       num("requests_per_sec"),
			p50:       num("p50_ms"),
			p99:       num("p99_ms"),
			peakRSSKB: num("peak_rss_kb"),
			non2xx:    int(num("non_2xx_3xx")),
			errors:    int(num("socket_errors")),
		}
		x.busyProxy = num("proxy_cpu_busy_pct")
		x.busyLoad = num("load_cpu_busy_pct")
		x.foreign = num("foreign_cpu_pct")
		if n := num("requests"); n > 0 {
			x.toOrigin = num("origin_requests") / n
		}
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, nil
}

func report(w io.Writer, runs []run, base string, order []string, disturbed float64) {
	var scenarios []string
	for _, r := range runs {
		if !slices.Contains(scenarios, r.scenario) {
			scenarios = append(scenarios, r.scenario)
		}
	}
	for _, sc := range scenarios {
		by := map[string][]run{}
		for _, r := range runs {
			if r.scenario == sc {
				by[r.proxy] = append(by[r.proxy], r)
			}
		}
		proxies := slices.Clone(order)
		for p := range by {
			if !slices.Contains(proxies, p) {
				proxies = append(proxies, p)
			}
		}
		fmt.Fprintf(w, "\nscenario: %s\n", sc)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintf(tw, "proxy\tclean runs\treq/s\tp50 ms\tp99 ms\tpeak RSS MB\tto origin\tCPU busy proxy/load\tnon-2xx\terrors\t%s÷proxy\trange (rounds)\t\n", base)
		for _, p := range proxies {
			all := by[p]
			if len(all) == 0 {
				continue
			}
			rs := clean(all, disturbed)
			var rps, p50, p99, orig, bp, bl []float64
			for _, r := range rs {
				rps = append(rps, r.rps)
				p50 = append(p50, r.p50)
				p99 = append(p99, r.p99)
				orig = append(orig, r.toOrigin)
				bp = append(bp, r.busyProxy)
				bl = append(bl, r.busyLoad)
			}
			// Memory and refusals count in every run, disturbed or not.
			var rss float64
			var non2xx, errs int
			for _, r := range all {
				rss = math.Max(rss, r.peakRSSKB)
				non2xx += r.non2xx
				errs += r.errors
			}
			ratio, rng := "—", ""
			if p != base {
				if rr := ratios(clean(by[base], disturbed), rs); len(rr) > 0 {
					ratio = fmt.Sprintf("%.2f×", median(rr))
					rng = fmt.Sprintf("%.2f–%.2f (%d)", slices.Min(rr), slices.Max(rr), len(rr))
				}
			}
			fmt.Fprintf(tw, "%s\t%d/%d\t%.0f\t%.2f\t%.2f\t%.1f\t%.1f%%\t%.0f%% / %.0f%%\t%d\t%d\t%s\t%s\t\n",
				p, len(rs), len(all), median(rps), median(p50), median(p99), rss/1024, 100*median(orig), median(bp), median(bl), non2xx, errs, ratio, rng)
		}
		tw.Flush()
		var noisy []string
		for _, r := range runs {
			if r.scenario == sc && r.foreign > disturbed {
				noisy = append(noisy, fmt.Sprintf("round %d %s (%.0f%%)", r.round, r.proxy, r.foreign))
			}
		}
		if len(noisy) > 0 {
			fmt.Fprintf(w, "  disturbed, left out (over %.0f%% of the CPUs went to other processes): %s\n", disturbed, strings.Join(noisy, ", "))
		}
	}
}

// clean returns the runs that were not disturbed, or all of them when
// every one was.
func clean(runs []run, disturbed float64) []run {
	var out []run
	for _, r := range runs {
		if r.foreign <= disturbed {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return runs
	}
	return out
}

// ratios pairs the baseline's runs with the other proxy's by round and
// returns baseline/other for each round both ran in.
func ratios(base, other []run) []float64 {
	var out []float64
	for _, b := range base {
		for _, o := range other {
			if o.round == b.round && o.rps > 0 {
				out = append(out, b.rps/o.rps)
			}
		}
	}
	return out
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

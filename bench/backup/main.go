// Command backup measures what moat adds to restic: a mixed tree (many
// small files, some medium, a few large ones, half of it compressible)
// backed up by moat's backup package and by plain restic backup, to two
// local repositories, in interleaved rounds, first run and incremental
// (after changing 2% of the files).
//
//	go run ./bench/backup [-size 1GiB] [-rounds 3] [-dir /var/tmp]
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"moat/internal/backup"
)

func main() {
	size := flag.String("size", "1GiB", "the tree's size: 1GiB, 256MiB")
	rounds := flag.Int("rounds", 3, "interleaved rounds")
	base := flag.String("dir", os.TempDir(), "where the tree and the repositories go")
	flag.Parse()
	bytes, err := parseSize(*size)
	if err != nil {
		fail(err)
	}
	ctx := context.Background()
	if v, err := backup.CheckRestic(ctx, ""); err != nil {
		fail(err)
	} else {
		fmt.Printf("restic %s, tree %s, %d rounds\n", v, *size, *rounds)
	}
	dir, err := os.MkdirTemp(*base, "moat-backup-bench-")
	if err != nil {
		fail(err)
	}
	defer os.RemoveAll(dir)
	tree := filepath.Join(dir, "tree")
	files := makeTree(tree, bytes)
	fmt.Printf("%d files\n", len(files))
	pw := filepath.Join(dir, "pw")
	if _, err := backup.NewPassword(pw); err != nil {
		fail(err)
	}
	var times = map[string][]time.Duration{}
	for round := range *rounds {
		moat := backup.Repo{URL: filepath.Join(dir, fmt.Sprintf("moat-%d", round)), PasswordFile: pw}
		plain := backup.Repo{URL: filepath.Join(dir, fmt.Sprintf("plain-%d", round)), PasswordFile: pw}
		for _, r := range []backup.Repo{moat, plain} {
			if err := r.Init(ctx); err != nil {
				fail(err)
			}
		}
		runMoat := func() time.Duration {
			start := time.Now()
			if _, err := moat.Backup(ctx, []string{tree}, []string{"bench"}, func(backup.Progress) {}); err != nil {
				fail(err)
			}
			return time.Since(start)
		}
		runPlain := func() time.Duration {
			start := time.Now()
			cmd := exec.Command("restic", "--repo", plain.URL, "--password-file", pw, "--no-cache", "backup", "--quiet", "--tag", "bench", tree)
			if out, err := cmd.CombinedOutput(); err != nil {
				fail(fmt.Errorf("restic backup: %v: %s", err, out))
			}
			return time.Since(start)
		}
		// Alternate who goes first, so that the page cache favours neither.
		if round%2 == 0 {
			times["moat first"] = append(times["moat first"], runMoat())
			times["restic first"] = append(times["restic first"], runPlain())
		} else {
			times["restic first"] = append(times["restic first"], runPlain())
			times["moat first"] = append(times["moat first"], runMoat())
		}
		touch(files, round)
		if round%2 == 0 {
			times["restic incremental"] = append(times["restic incremental"], runPlain())
			times["moat incremental"] = append(times["moat incremental"], runMoat())
		} else {
			times["moat incremental"] = append(times["moat incremental"], runMoat())
			times["restic incremental"] = append(times["restic incremental"], runPlain())
		}
		for _, r := range []backup.Repo{moat, plain} {
			os.RemoveAll(r.URL)
		}
	}
	fmt.Printf("\n%-20s %10s %10s\n", "run", "median", "MB/s")
	for _, k := range []string{"restic first", "moat first", "restic incremental", "moat incremental"} {
		m := median(times[k])
		fmt.Printf("%-20s %10s %10.0f\n", k, m.Round(time.Millisecond), float64(bytes)/1e6/m.Seconds())
	}
	for _, kind := range []string{"first", "incremental"} {
		mo, pl := median(times["moat "+kind]), median(times["restic "+kind])
		fmt.Printf("moat's overhead, %s run: %+.1f %%\n", kind, (mo.Seconds()/pl.Seconds()-1)*100)
	}
}

// makeTree writes about total bytes: 70% of the files are small (1–16
// KiB), most of the bytes are in medium (1–4 MiB) and large (64 MiB)
// files; half the data is random, half text.
func makeTree(root string, total int64) []string {
	rng := rand.New(rand.NewPCG(1, 2))
	var files []string
	var written int64
	chunk := make([]byte, 1<<20)
	for i := 0; written < total; i++ {
		var n int64
		switch {
		case i%100 == 99:
			n = 64 << 20
		case i%10 == 9:
			n = int64(1<<20 + rng.IntN(3<<20))
		default:
			n = int64(1<<10 + rng.IntN(15<<10))
		}
		n = min(n, total-written)
		p := filepath.Join(root, fmt.Sprintf("d%02d", i%37), fmt.Sprintf("d%03d", i%211), fmt.Sprintf("f%06d", i))
		os.MkdirAll(filepath.Dir(p), 0o755)
		f, err := os.Create(p)
		if err != nil {
			fail(err)
		}
		for left := n; left > 0; {
			k := min(left, int64(len(chunk)))
			if i%2 == 0 {
				for j := range chunk[:k] {
					chunk[j] = byte(rng.Uint32())
				}
			} else {
				copy(chunk[:k], strings.Repeat("moat keeps its backups with restic. ", int(k)/36+1))
			}
			f.Write(chunk[:k])
			left -= k
		}
		f.Close()
		files = append(files, p)
		written += n
	}
	return files
}

// touch changes 2% of the files, a round's own.
func touch(files []string, round int) {
	for i := round; i < len(files); i += 50 {
		f, err := os.OpenFile(files[i], os.O_WRONLY|os.O_APPEND, 0)
		if err == nil {
			fmt.Fprintf(f, "changed in round %d\n", round)
			f.Close()
		}
	}
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

func parseSize(s string) (int64, error) {
	for suffix, mult := range map[string]int64{"GiB": 1 << 30, "MiB": 1 << 20} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseFloat(n, 64)
			return int64(v * float64(mult)), err
		}
	}
	return 0, fmt.Errorf("size %q: write it like 1GiB or 256MiB", s)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench/backup:", err)
	os.Exit(1)
}

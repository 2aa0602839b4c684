package daemon

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"moat/internal/api"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/guard"
	"moat/internal/notify"
	"moat/internal/store"
)

// newWarden wires the brute-force guard: bans kept in the store, put in
// force in the kernel (when moat manages the firewall) and at the edge,
// written to the activity log, and ban storms alerted.
func (d *Daemon) newWarden() *guard.Warden {
	var enforcers []guard.Enforcer
	if d.opts.Firewall != nil {
		enforcers = append(enforcers, kernelBans{d.opts.Firewall})
	}
	return guard.NewWarden(guard.WardenOptions{
		Ledger:    d.store,
		Enforcers: enforcers,
		Logger:    d.log,
		Record: func(ctx context.Context, action string, b guard.Ban) {
			detail := b.Reason
			if !b.Expires.IsZero() {
				detail += fmt.Sprintf("; until %s", b.Expires.UTC().Format(time.RFC3339))
			}
			if len(b.Evidence) > 0 {
				detail += "; last line: " + b.Evidence[len(b.Evidence)-1]
			}
			e := store.Entry{Who: b.By, From: "guard " + b.Jail, Action: action, Target: b.Prefix.String(), Detail: detail}
			if err := d.store.Record(context.WithoutCancel(ctx), e); err != nil {
				d.log.Error("activity log", "err", err)
			}
		},
		Storm: func(ctx context.Context, bans []guard.Ban) {
			d.mu.Lock()
			n := d.notifier
			d.mu.Unlock()
			if n == nil {
				return
			}
			jails := map[string]int{}
			for _, b := range bans {
				jails[b.Jail]++
			}
			msg := fmt.Sprintf("%d addresses were banned within a short time (%v). moat keeps banning; check moat guard list, and whether one of your own services is failing logins.", len(bans), jails)
			if err := n.Notify(ctx, notify.Alert{At: time.Now().UTC(), Kind: "guard.storm", Subject: "bans", Message: msg}); err != nil {
				d.log.Warn("alert not delivered", "err", err)
			}
		},
	})
}

// configureGuard starts the jails of s: the sshd jail on its log (or the
// journal), the moat jail for moat's own logins, and the owner's jails.
func (d *Daemon) configureGuard(s config.State) {
	if d.warden == nil {
		return
	}
	var specs []guard.JailSpec
	for _, j := range s.GuardJails() {
		spec := guard.JailSpec{Name: j.Name, Policy: j.Policy(s.Server.RateLimit.IPv6Prefix), Filter: j.Matcher()}
		// Jails with a filter read a log; the others (moat's logins, an
		// app's answers) are told of failures by moat itself.
		if spec.Filter != nil && d.opts.Demo == nil {
			spec.Source = d.source(j)
		}
		specs = append(specs, spec)
	}
	d.warden.Configure(d.life, specs, s.GuardIgnore())
}

// source is where a jail reads its lines; nil (and a warning) when there
// is nowhere to read.
func (d *Daemon) source(j config.Jail) guard.Source {
	log := j.Log
	if log == "" && j.Name == config.JailSSHD {
		log = config.DefaultSSHDLog
		if _, err := os.Stat(log); err != nil {
			log = config.Journal
		}
	}
	if log != config.Journal {
		return guard.File{Path: log}
	}
	jr := d.opts.Journal
	if jr == nil {
		jr = &guard.Journal{Logger: d.log}
		if j.Name == config.JailSSHD {
			jr.Matches = []string{"SYSLOG_IDENTIFIER=sshd", "SYSLOG_IDENTIFIER=sshd-session"}
		}
	}
	if err := jr.Available(); err != nil {
		d.log.Warn("the guard cannot read the journal, so jail "+j.Name+" sees nothing; set its log file in guard.jails", "err", err)
		return nil
	}
	return guard.JournalSource{Journal: jr}
}

// kernelBans puts bans in the firewall's ban sets. With the firewall off
// the sets do not exist; the ban is kept and the edge still enforces it.
type kernelBans struct{ m *firewall.Manager }

func (k kernelBans) Ban(ctx context.Context, p netip.Prefix, d time.Duration) error {
	if err := k.m.Ban(ctx, p, d); err != nil {
		if active, aerr := k.m.Active(ctx); aerr == nil && !active {
			return fmt.Errorf("not in the kernel: moat's firewall is off")
		}
		return err
	}
	return nil
}

// Unban lifts p in the kernel. A ban that ran out there, or no table to
// hold it (the firewall is off, or nft cannot be run here at all), is no
// error: the kernel holds nothing to lift. Only a delete that fails while
// the table is there is.
func (k kernelBans) Unban(ctx context.Context, p netip.Prefix) error {
	err := k.m.Unban(ctx, p)
	if err == nil || strings.Contains(err.Error(), "does not exist") {
		return nil
	}
	if active, aerr := k.m.Active(ctx); aerr != nil || !active {
		return nil
	}
	return err
}

// BanAll makes the kernel's ban sets hold bans, each with the time it has
// left, in one transaction. Elements that overlap one of them (left from
// a crash between replacing a ban and forgetting the old one) would make
// nft refuse the whole transaction, so they are taken out first.
func (k kernelBans) BanAll(ctx context.Context, bans []guard.Ban, now time.Time) error {
	if active, err := k.m.Active(ctx); err == nil && !active {
		return nil // the firewall is off: the edge holds them
	}
	held, err := k.m.Bans(ctx)
	if err != nil {
		return err
	}
	want := make(map[netip.Prefix]bool, len(bans))
	for _, b := range bans {
		want[b.Prefix] = true
	}
	for _, h := range held {
		if want[h.Prefix] {
			continue
		}
		for _, b := range bans {
			if b.Prefix.Overlaps(h.Prefix) {
				if err := k.m.Unban(ctx, h.Prefix); err != nil {
					return err
				}
				break
			}
		}
	}
	fb := make([]firewall.Ban, 0, len(bans))
	for _, b := range bans {
		fb = append(fb, firewall.Ban{Prefix: b.Prefix, Expires: max(b.Left(now), 0)})
	}
	return k.m.Load(ctx, fb)
}

// appFailed tells the guard of an app's answer that counts as a failed
// login (one of the app's guard statuses).
func (d *Daemon) appFailed(app string, client netip.Addr, r *http.Request, status int) {
	// The path is the client's: escaped, it cannot break the activity
	// log's lines.
	detail := fmt.Sprintf("%s %s%s -> %d", r.Method, r.Host, r.URL.EscapedPath(), status)
	d.warden.Fail(context.WithoutCancel(r.Context()), app, client, detail)
}

// Guard implements api.Runtime.
func (d *Daemon) Guard() api.Guard { return d.warden }

// expireBans forgets bans that ran out, until ctx ends.
func (d *Daemon) expireBans(ctx context.Context) {
	t := time.NewTicker(10 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.warden.Expire(ctx)
		}
	}
}

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"

	"github.com/spf13/cobra"

	"moat/internal/api"
	"moat/internal/auth"
	"moat/internal/daemon"
	"moat/internal/store"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// globals are the flags every command shares.
type globals struct {
	dataDir string
	socket  string
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func newRoot() *cobra.Command {
	g := &globals{}
	root := &cobra.Command{
		Use:   "moat",
		Short: "Turnkey security for a self-hosted Linux server",
		Long: `moat puts an HTTPS edge with automatic certificates and security headers in
front of every app on this server, and keeps the desired state in one store.

moat serve runs the daemon; the other commands talk to it over its control
socket (root only), or change the store directly when no daemon runs.`,
		Example: `  moat init --domain moat.example.com --email admin@example.com
  moat app add gitea --domain git.example.com --upstream http://127.0.0.1:3000
  moat serve
  moat status
  moat serve --demo`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().StringVar(&g.dataDir, "data-dir", envOr("MOAT_DATA_DIR", "/var/lib/moat"), "where moat keeps its store and certificates ($MOAT_DATA_DIR)")
	root.PersistentFlags().StringVar(&g.socket, "socket", envOr("MOAT_SOCKET", "/run/moat/moat.sock"), "the daemon's control socket ($MOAT_SOCKET)")
	root.AddCommand(
		newVersion(),
		newServe(g),
		newInit(g),
		newApp(g),
		newFirewall(g),
		newGuard(g),
		newSSH(g),
		newHost(g),
		newBackup(g),
		newAudit(g),
		newUpdates(g),
		newMail(g),
		newNotify(g),
		newUser(g),
		newApply(g),
		newExport(g),
		newStatus(g),
		newActivity(g),
	)
	return root
}

func newVersion() *cobra.Command {
	return &cobra.Command{
		Use:     "version",
		Short:   "Print moat's version",
		Example: "  moat version",
		Args:    cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "moat", version)
		},
	}
}

// client reaches the daemon, or, when none runs, opens the store and runs
// the same API handlers in this process. close releases what it opened.
func (g *globals) client(ctx context.Context) (c *api.Client, close func(), err error) {
	c, err = api.DialControl(ctx, g.socket)
	if err == nil {
		return c, func() {}, nil
	}
	if !errors.Is(err, api.ErrNoDaemon) {
		return nil, nil, err
	}
	if daemon.Running(g.dataDir) {
		return nil, nil, fmt.Errorf("a moat daemon holds %s but does not answer at %s: give its socket with --socket (changing its store around it would not take effect)", g.dataDir, g.socket)
	}
	st, err := store.OpenSQLite(ctx, daemon.StorePath(g.dataDir))
	if err != nil {
		return nil, nil, fmt.Errorf("%w (no daemon answers at %s, so moat opens the store directly)", err, g.socket)
	}
	srv := &api.Server{Store: st, Log: discardLogger(), DataDir: g.dataDir}
	if sealer, err := auth.OpenSealer(daemon.SealerPath(g.dataDir)); err == nil {
		// The accounts, without mail: a sign-in needs the daemon anyway.
		if srv.Auth, err = auth.New(auth.Options{Store: st, Sealer: sealer, Logger: discardLogger(),
			Record: func(ctx context.Context, e auth.Event) error {
				return st.Record(ctx, store.Entry{Who: e.Who, From: e.From, Action: e.Action, Target: e.Target, Detail: e.Detail})
			}}); err != nil {
			st.Close()
			return nil, nil, err
		}
	}
	who := "uid " + fmt.Sprint(os.Getuid())
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	return api.Local(srv.Handler(), store.Actor{Who: who + " (moat CLI, no daemon)", From: "local"}), func() { st.Close() }, nil
}

// call is one API request from a command.
func (g *globals) call(cmd *cobra.Command, method, path string, body, out any) error {
	c, done, err := g.client(cmd.Context())
	if err != nil {
		return err
	}
	defer done()
	return c.Do(cmd.Context(), method, path, body, out)
}

// printChange shows what a change did; a change that was stored but not
// applied by the daemon is an error, so scripts see it.
func printChange(w io.Writer, res api.ChangeResponse) error {
	fmt.Fprint(w, res.Plan.String())
	if res.DryRun {
		fmt.Fprintln(w, "Dry run: nothing was changed.")
	}
	if res.Warning != "" {
		return fmt.Errorf("%s (run the same command again to retry)", res.Warning)
	}
	return nil
}

package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"

	"github.com/spf13/cobra"

	"moat/internal/daemon"
	"moat/internal/firewall"
	"moat/internal/sshd"
)

func newServe(g *globals) *cobra.Command {
	var demo, manageFirewall, manageSSH bool
	var httpsAddr, httpAddr, logLevel string
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the daemon: the edge, certificates and the control socket",
		Long: `serve runs moat: the HTTPS edge in front of the apps, automatic certificates,
and the control socket the other commands use. Changes apply without a restart.

With --demo it needs no DNS, no root-only ports and no configuration: it serves
a built-in app and moat's status page on https://localhost:8443 with
certificates from a local CA it creates, and prints how to trust that CA.`,
		Example: `  moat serve
  moat serve --demo
  moat serve --demo --https-addr 127.0.0.1:9443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var level slog.Level
			if err := level.UnmarshalText([]byte(logLevel)); err != nil {
				return fmt.Errorf("--log-level %q: use debug, info, warn or error", logLevel)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
			if os.Getenv("GOGC") == "" {
				// The daemon's live heap is small (tens of MB at most), so
				// trading some of it for fewer collections is cheap: on one
				// core this serves about a tenth more cache hits per second,
				// for about 2 MB more peak RSS (bench/README.md). GOGC in the
				// environment overrides it.
				debug.SetGCPercent(gcPercent)
			}
			opts := daemon.Options{DataDir: g.dataDir, Socket: g.socket, Logger: log}
			if manageFirewall && !demo {
				opts.Firewall = firewall.NewManager(firewall.NFT{})
			}
			if manageSSH && !demo {
				opts.SSH = &sshd.Manager{Paths: sshd.DefaultPaths()}
			}
			if demo {
				dm := &daemon.Demo{HTTPSAddr: httpsAddr, HTTPAddr: httpAddr}
				opts.Demo = dm
				if !cmd.Flags().Changed("data-dir") && os.Getenv("MOAT_DATA_DIR") == "" {
					opts.DataDir = demoDir()
				}
				if !cmd.Flags().Changed("socket") && os.Getenv("MOAT_SOCKET") == "" {
					opts.Socket = filepath.Join(opts.DataDir, "moat.sock")
				}
				opts.Ready = func(info daemon.Info) { fmt.Fprint(cmd.OutOrStdout(), dm.Banner(info)) }
			}
			return daemon.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().BoolVar(&demo, "demo", false, "run the demo: local CA, loopback ports, a built-in app")
	cmd.Flags().StringVar(&httpsAddr, "https-addr", "127.0.0.1:8443", "with --demo: the HTTPS address")
	cmd.Flags().StringVar(&httpAddr, "http-addr", "127.0.0.1:8080", "with --demo: the HTTP address (redirects to HTTPS)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	cmd.Flags().BoolVar(&manageFirewall, "firewall", true, "put the stored firewall rules in force with nftables (never with --demo)")
	cmd.Flags().BoolVar(&manageSSH, "ssh", true, "put the keys of moat ssh keys where sshd reads them (never with --demo)")
	return cmd
}

// gcPercent is the daemon's garbage-collection target unless GOGC is set.
const gcPercent = 200

// demoDir keeps the demo's store and local CA apart from a real install.
func demoDir() string {
	if os.Geteuid() == 0 {
		return "/var/lib/moat-demo"
	}
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "moat-demo")
	}
	return filepath.Join(os.TempDir(), "moat-demo")
}

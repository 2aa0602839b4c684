package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"moat/internal/api"
	"moat/internal/apps"
	"moat/internal/auth"
	"moat/internal/config"
	"moat/internal/firewall"
	"moat/internal/store"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newInit(g *globals) *cobra.Command {
	var domain, email, admin, sshdConfig string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Write the server's first settings: its domain, the contact email, the first firewall rules",
		Long: `init sets the server's own domain and the email address used for the ACME
account and for alerts. Run it again to change them.

The first time, it also opens the ports the server needs in the firewall:
sshd's port (read from its configuration) and the edge's HTTP and HTTPS
ports. moat serve puts them in force when it starts.

When there is no account yet, it makes the first admin (--admin, the
contact email by default): on a terminal it asks for the password;
otherwise it prints a one-time invitation, valid 24 hours, with which the
owner sets it.`,
		Example: "  moat init --domain moat.example.com --email admin@example.com",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if domain == "" && email == "" {
				return fmt.Errorf("give --domain and --email, like: moat init --domain moat.example.com --email admin@example.com")
			}
			var p api.ServerPatch
			if cmd.Flags().Changed("domain") {
				p.Domain = &domain
			}
			if cmd.Flags().Changed("email") {
				p.Email = &email
			}
			var res api.ChangeResponse
			if err := g.call(cmd, "PATCH", "/v1/server", p, &res); err != nil {
				return err
			}
			if err := printChange(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			if err := initFirewall(g, cmd, sshdConfig); err != nil {
				return err
			}
			if admin == "" {
				admin = email
			}
			return initAdmin(g, cmd, admin)
		},
	}
	cmd.Flags().StringVar(&domain, "domain", "", "the server's own domain, like moat.example.com")
	cmd.Flags().StringVar(&email, "email", "", "contact for the certificate authority and for alerts")
	cmd.Flags().StringVar(&admin, "admin", "", "the first admin account's email, when there is no account yet (default: --email)")
	cmd.Flags().StringVar(&sshdConfig, "sshd-config", "/etc/ssh/sshd_config", "sshd's configuration, to read its port from")
	return cmd
}

// initFirewall opens sshd's ports and the edge's when the firewall has no
// rules yet.
func initFirewall(g *globals, cmd *cobra.Command, sshdConfig string) error {
	s, err := getFirewall(g, cmd)
	if err != nil || len(s.Rules) > 0 {
		return err
	}
	var st api.StateResponse
	if err := g.call(cmd, "GET", "/v1/state", nil, &st); err != nil {
		return err
	}
	ports, note := sshdPorts(sshdConfig)
	var rules []config.FirewallRule
	for _, p := range ports {
		rules = append(rules, config.FirewallRule{Port: fmt.Sprintf("%d/tcp", p), Comment: "ssh"})
	}
	for _, e := range []struct{ addr, comment string }{{st.State.Server.HTTPAddr(), "edge: HTTP and ACME"}, {st.State.Server.HTTPSAddr(), "edge: HTTPS"}} {
		if _, port, err := net.SplitHostPort(e.addr); err == nil && !slices.ContainsFunc(rules, func(r config.FirewallRule) bool { return r.Port == port+"/tcp" }) {
			rules = append(rules, config.FirewallRule{Port: port + "/tcp", Comment: e.comment})
		}
	}
	w := cmd.OutOrStdout()
	for _, r := range rules {
		if err := g.call(cmd, "POST", "/v1/firewall/rules", r, &api.ChangeResponse{}); err != nil {
			return err
		}
		fmt.Fprintf(w, "Firewall: opened %s (%s).\n", r.Port, r.Comment)
	}
	if note != "" {
		fmt.Fprintln(w, "Firewall: "+note)
	}
	fmt.Fprintln(w, "Everything else inbound will be dropped once the rules are in force: moat serve applies them when it starts (moat firewall list shows them).")
	return nil
}

// initAdmin makes the first admin account when there is none: with a
// password typed on the terminal, or else an invitation printed once.
func initAdmin(g *globals, cmd *cobra.Command, email string) error {
	var list []api.Account
	if err := g.call(cmd, "GET", "/v1/users?limit=1", nil, &list); err != nil {
		return err
	}
	if len(list) > 0 || email == "" {
		return nil
	}
	prompt := ""
	if f, ok := cmd.InOrStdin().(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		prompt = "Password for the first admin, " + email + " (at least 12 characters): "
	}
	return addAccount(g, cmd, api.UserRequest{Email: email, Role: auth.RoleAdmin}, prompt, "the first admin, ")
}

// sshdPorts reads sshd's ports from its configuration; see
// firewall.SSHDPorts.
func sshdPorts(path string) ([]uint16, string) { return firewall.SSHDPorts(path) }

func newApp(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "app",
		Short: "Add, list, show, change and remove the apps behind the edge",
		Example: `  moat app add gitea --domain git.example.com --upstream http://127.0.0.1:3000
  moat app list
  moat app show gitea
  moat app set gitea --upstream http://127.0.0.1:3001 --header X-Frame-Options=DENY
  moat app remove gitea --yes`,
	}
	cmd.AddCommand(newAppAdd(g), newAppList(g), newAppShow(g), newAppSet(g), newAppRemove(g),
		newAppAction(g, "start", "Start an app with its run.start command"),
		newAppAction(g, "stop", "Stop an app with its run.stop command (refused while it is protected)"),
		newAppAction(g, "restart", "Restart an app with its run.restart command (refused while it is protected)"),
		newAppAction(g, "upgrade", "Upgrade an app with its run.upgrade command (refused while it is protected)"),
		newAppAction(g, "status", "Ask after an app with its run.status command"),
		newAppRemoved(g), newAppRestore(g))
	return cmd
}

// parseHeaders turns repeated --header K=V flags into overrides; K= removes
// a default header.
func parseHeaders(hs []string) (map[string]string, error) {
	if len(hs) == 0 {
		return nil, nil
	}
	out := map[string]string{}
	for _, h := range hs {
		k, v, ok := strings.Cut(h, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--header %q: write NAME=VALUE, like X-Frame-Options=DENY (NAME= removes a default header)", h)
		}
		out[k] = v
	}
	return out, nil
}

func newAppAdd(g *globals) *cobra.Command {
	var domains, headers, ports []string
	var upstream, compose string
	var dry bool
	cmd := &cobra.Command{
		Use:   "add NAME --domain DOMAIN --upstream URL",
		Short: "Put an app behind the edge",
		Long: `add routes one or more domains to an app listening on this machine; moat
gets certificates for the domains once their DNS points here.`,
		Example: `  moat app add gitea --domain git.example.com --upstream http://127.0.0.1:3000
  moat app add grafana --domain grafana.example.com --domain metrics.example.com --upstream http://127.0.0.1:3001
  moat app add gitea --domain git.example.com --upstream http://127.0.0.1:3000 --compose /srv/gitea/compose.yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			h, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			ps, err := parsePorts(ports)
			if err != nil {
				return err
			}
			a := config.App{Name: args[0], Domains: domains, Upstream: upstream, Headers: h, Ports: ps}
			if compose != "" {
				if err := fromCompose(cmd.OutOrStdout(), &a, compose); err != nil {
					return err
				}
			}
			ps = a.Ports
			var res api.ChangeResponse
			if err := g.call(cmd, "POST", "/v1/apps"+dryQuery(dry), a, &res); err != nil {
				return err
			}
			if err := printChange(cmd.OutOrStdout(), res); err != nil {
				return err
			}
			if len(ps) > 0 && !dry {
				fmt.Fprintln(cmd.OutOrStdout(), "The app's ports reach the firewall with moat firewall apply (see moat firewall plan).")
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVar(&domains, "domain", nil, "a domain of the app (repeat for more)")
	cmd.Flags().StringVar(&upstream, "upstream", "", "where the app listens, like http://127.0.0.1:3000")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "override a security header: NAME=VALUE, or NAME= to remove it")
	cmd.Flags().StringArrayVar(&ports, "port", nil, portHelp)
	cmd.Flags().StringVar(&compose, "compose", "", "a Docker Compose file: its published ports become the app's ports, and docker compose its lifecycle")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the plan, change nothing")
	return cmd
}

// fromCompose gives an app the ports its Compose file publishes (those
// --port did not name already; internal unless said otherwise) and the
// file's docker compose commands as its lifecycle, and says so.
func fromCompose(out io.Writer, a *config.App, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("--compose: %w", err)
	}
	found, err := apps.ComposePorts(data)
	if err != nil {
		return fmt.Errorf("--compose %s: %w", file, err)
	}
	for _, p := range found {
		switch {
		case p.Loopback():
			fmt.Fprintf(out, "From %s: %s (service %s) is published on %s only: no firewall rule needed.\n", file, p.Port, p.Service, p.HostIP)
		case slices.ContainsFunc(a.Ports, func(x config.AppPort) bool { return x.Port == p.Port }):
		default:
			a.Ports = append(a.Ports, config.AppPort{Port: p.Port})
			fmt.Fprintf(out, "From %s: %s (service %s) is an app port, reachable from this machine's private networks only; make it public with moat app set %s --port %s=public.\n", file, p.Port, p.Service, a.Name, p.Port)
		}
	}
	a.Run = apps.ComposeRun(file)
	return nil
}

const portHelp = "a port the app listens on beside the edge, and who may reach it: 6379/tcp (internal: loopback and private networks), 27015/udp=public, 5432/tcp=private:203.0.113.0/24 (repeat for more)"

// parsePorts reads --port flags: PORT[/PROTO][=ACCESS[:SOURCE,...]].
func parsePorts(specs []string) ([]config.AppPort, error) {
	var out []config.AppPort
	for _, spec := range specs {
		port, rest, _ := strings.Cut(spec, "=")
		access, from, _ := strings.Cut(rest, ":")
		p := config.AppPort{Port: port, Access: access}
		for _, src := range strings.Split(from, ",") {
			if src = strings.TrimSpace(src); src != "" {
				p.From = append(p.From, src)
			}
		}
		if port == "" {
			return nil, fmt.Errorf("--port %q: write PORT/PROTO, optionally =public, =internal or =private:SOURCES, like 5432/tcp=private:203.0.113.0/24", spec)
		}
		out = append(out, p)
	}
	return out, nil
}

func dryQuery(dry bool) string {
	if dry {
		return "?dry_run=true"
	}
	return ""
}

func newAppList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Short:   "List the apps",
		Example: "  moat app list",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var apps []config.App
			if err := g.call(cmd, "GET", "/v1/apps?limit=1000", nil, &apps); err != nil {
				return err
			}
			if len(apps) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "No apps. Add one: moat app add NAME --domain app.example.com --upstream http://127.0.0.1:3000")
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tDOMAINS\tUPSTREAM")
			for _, a := range apps {
				fmt.Fprintf(tw, "%s\t%s\t%s\n", a.Name, strings.Join(a.Domains, ","), a.Upstream)
			}
			return tw.Flush()
		},
	}
}

func newAppShow(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "show NAME",
		Short:   "Show one app as moat.yaml would hold it",
		Example: "  moat app show gitea",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var a config.App
			if err := g.call(cmd, "GET", "/v1/apps/"+url.PathEscape(args[0]), nil, &a); err != nil {
				return err
			}
			out, err := config.Marshal(config.State{Apps: []config.App{a}})
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}

func newAppSet(g *globals) *cobra.Command {
	var domains, headers, ports []string
	var upstream, rateLimit, cacheTTL string
	var allow []string
	var resetHeaders, noPorts, private, public, protect, dry bool
	cmd := &cobra.Command{
		Use:   "set NAME [--domain D]... [--upstream URL] [--header NAME=VALUE]...",
		Short: "Change an app: its domains (replaced as a whole), upstream, headers, rate limit or cache",
		Example: `  moat app set gitea --upstream http://127.0.0.1:3001
  moat app set gitea --domain git.example.com --domain code.example.com
  moat app set gitea --header Content-Security-Policy="default-src 'self'" --header X-Frame-Options=
  moat app set gitea --rate-limit 20/second --cache off
  moat app set grafana --private --allow owner@example.com --allow operator`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var p api.AppPatch
			if cmd.Flags().Changed("domain") {
				p.Domains = &domains
			}
			if cmd.Flags().Changed("upstream") {
				p.Upstream = &upstream
			}
			h, err := parseHeaders(headers)
			if err != nil {
				return err
			}
			p.Headers, p.ResetHeaders = h, resetHeaders
			if cmd.Flags().Changed("port") || noPorts {
				ps, err := parsePorts(ports)
				if err != nil {
					return err
				}
				if ps == nil {
					ps = []config.AppPort{}
				}
				p.Ports = &ps
			}
			if cmd.Flags().Changed("rate-limit") {
				rl, err := parseRateLimit(rateLimit)
				if err != nil {
					return err
				}
				p.RateLimit = &rl
			}
			switch {
			case private && public:
				return fmt.Errorf("--private and --public: give one of them")
			case private:
				v := config.AccessPrivate
				p.Access = &v
			case public:
				v, none := config.AccessPublic, []string{}
				p.Access, p.Allow = &v, &none
			}
			if cmd.Flags().Changed("allow") {
				p.Allow = &allow
			}
			if cmd.Flags().Changed("protect") {
				p.Protect = &protect
			}
			if cmd.Flags().Changed("cache") {
				c := config.Cache{TTL: cacheTTL}
				if cacheTTL == "off" {
					c.TTL = "0s"
				}
				p.Cache = &c
			}
			var res api.ChangeResponse
			if err := g.call(cmd, "PATCH", "/v1/apps/"+url.PathEscape(args[0])+dryQuery(dry), p, &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
	cmd.Flags().StringArrayVar(&domains, "domain", nil, "the app's domains (repeat; replaces the list)")
	cmd.Flags().StringVar(&upstream, "upstream", "", "where the app listens")
	cmd.Flags().StringArrayVar(&headers, "header", nil, "override a security header: NAME=VALUE, or NAME= to remove it")
	cmd.Flags().BoolVar(&resetHeaders, "reset-headers", false, "drop every header override first")
	cmd.Flags().StringArrayVar(&ports, "port", nil, portHelp+"; replaces the list")
	cmd.Flags().BoolVar(&noPorts, "no-ports", false, "remove the app's ports")
	cmd.Flags().StringVar(&rateLimit, "rate-limit", "", "requests per client address, like 20/second or 600/minute; off for none, server for the server's")
	cmd.Flags().StringVar(&cacheTTL, "cache", "", "how long the output cache keeps a page, like 5s; off for no cache")
	cmd.Flags().BoolVar(&private, "private", false, "put the app behind moat's sign-in: only accounts reach it, and it is told who they are")
	cmd.Flags().BoolVar(&public, "public", false, "let anyone reach the app again")
	cmd.Flags().StringArrayVar(&allow, "allow", nil, "who may use the private app: an email or a role (repeat; replaces the list)")
	cmd.Flags().BoolVar(&protect, "protect", false, "termination protection: --protect refuses stop, restart, upgrade and remove; --protect=false allows them again")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the plan, change nothing")
	return cmd
}

// parseRateLimit reads --rate-limit: N/second, N/minute, off, or server.
func parseRateLimit(v string) (config.RateLimit, error) {
	switch v {
	case "off":
		return config.RateLimit{Off: true}, nil
	case "server":
		return config.RateLimit{}, nil
	}
	n, per, ok := strings.Cut(v, "/")
	count, err := strconv.Atoi(n)
	if !ok || err != nil || (per != "second" && per != "minute") {
		return config.RateLimit{}, fmt.Errorf("--rate-limit %q: write it as requests per second or minute, like 20/second or 600/minute (or off, or server)", v)
	}
	return config.RateLimit{Requests: count, Per: per}, nil
}

func newAppRemove(g *globals) *cobra.Command {
	var confirm, noGrace string
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove an app: backed up, stopped, its remove command run, its routes and rules dropped",
		Long: `remove asks for the app's name typed back. It backs the app's data up first
(kept for the grace period, backup.grace, 7 days by default: moat app restore
brings the app back), runs its stop and remove commands, and drops its routes and
firewall rules. A failed backup removes nothing.`,
		Example: `  moat app remove gitea
  moat app remove gitea --confirm gitea
  moat app remove gitea --confirm gitea --no-grace-backup gitea`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if !cmd.Flags().Changed("confirm") {
				fmt.Fprintf(cmd.OutOrStdout(), "Removing app %s stops serving its domains. Type its name to remove it: ", name)
				answer, _ := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				confirm = strings.TrimSpace(answer)
			}
			if confirm != name {
				return fmt.Errorf("not removed: %q is not the app's name, %s", confirm, name)
			}
			path := "/v1/apps/" + url.PathEscape(name) + "?confirm=" + url.QueryEscape(confirm)
			if noGrace != "" {
				path += "&no_grace_backup=" + url.QueryEscape(noGrace)
			}
			var res api.RemoveResponse
			if err := g.call(cmd, "DELETE", path, nil, &res); err != nil {
				return err
			}
			if err := printChange(cmd.OutOrStdout(), res.ChangeResponse); err != nil {
				return err
			}
			if gr := res.Grace; gr != nil {
				what := "Its settings are"
				if gr.Snapshot != "" {
					what = fmt.Sprintf("Its data (snapshot %s in %s) and settings are", gr.Snapshot, gr.Repository)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s kept until %s: moat app restore %s brings it back.\n", what, gr.Expires.Local().Format(time.DateTime), name)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&confirm, "confirm", "", "the app's name, typed back (for scripts)")
	cmd.Flags().StringVar(&noGrace, "no-grace-backup", "", "the app's name, typed a second time: remove it with no backup to bring it back from")
	return cmd
}

func newAppRemoved(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "removed",
		Short:   "The apps removed within their grace period, and until when they can be brought back",
		Example: "  moat app removed",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var list []store.Removed
			if err := g.call(cmd, "GET", "/v1/removed-apps", nil, &list); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tREMOVED\tRESTORABLE UNTIL\tBACKUP")
			for _, r := range list {
				b := "(no data)"
				if r.Snapshot != "" {
					b = r.Snapshot + " in " + r.Repository
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", r.App.Name, r.At.Local().Format(time.DateTime), r.Expires.Local().Format(time.DateTime), b)
			}
			return tw.Flush()
		},
	}
}

func newAppRestore(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "restore NAME",
		Short:   "Bring a removed app back within its grace: its data, settings and routes",
		Example: "  moat app restore gitea",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res api.ChangeResponse
			if err := g.call(cmd, "POST", "/v1/apps/"+url.PathEscape(args[0])+"/restore", nil, &res); err != nil {
				return err
			}
			return printChange(cmd.OutOrStdout(), res)
		},
	}
}

// newAppAction runs one of an app's lifecycle commands.
func newAppAction(g *globals, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:     action + " NAME",
		Short:   short,
		Example: "  moat app " + action + " gitea",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var res apps.Result
			if err := g.call(cmd, "POST", "/v1/apps/"+url.PathEscape(args[0])+"/"+action, nil, &res); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			fmt.Fprint(out, res.Output)
			if res.Output != "" && !strings.HasSuffix(res.Output, "\n") {
				fmt.Fprintln(out)
			}
			switch {
			case res.TimedOut:
				return fmt.Errorf("%s of %s: %s was killed at the app's timeout (run.timeout) after %s", action, args[0], res.Command, res.Duration)
			case res.ExitCode != 0:
				return fmt.Errorf("%s of %s: %s exited %d after %s", action, args[0], res.Command, res.ExitCode, res.Duration)
			}
			return nil
		},
	}
}

func newApply(g *globals) *cobra.Command {
	var file string
	var dry bool
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Make the desired state what a moat.yaml says, showing the plan",
		Long: `apply replaces the whole desired state with the file's (apps missing from the
file are removed), prints the plan and applies it in one step. A file with
any error is refused whole and nothing changes. Use - to read standard input.`,
		Example: `  moat apply -f moat.yaml --dry-run
  moat apply -f moat.yaml
  moat export | moat apply -f -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if file == "" {
				return fmt.Errorf("give the file to apply: moat apply -f moat.yaml (or -f - for standard input)")
			}
			var data []byte
			var err error
			if file == "-" {
				data, err = io.ReadAll(cmd.InOrStdin())
			} else {
				data, err = os.ReadFile(file)
			}
			if err != nil {
				return err
			}
			// An empty input is most likely a failed `moat export |`, and
			// applying it would remove every app and setting.
			if len(bytes.TrimSpace(data)) == 0 {
				return fmt.Errorf("%s is empty: refused, nothing was changed (it would remove every app and setting; to do that on purpose, apply a file that says `server: {}`)", nameOf(file))
			}
			// Checked here first, so a bad file is refused with its
			// problems before anything is contacted.
			if _, err := config.Parse(data); err != nil {
				return fmt.Errorf("%s: refused, nothing was changed:\n%w", nameOf(file), err)
			}
			c, done, err := g.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			// The plan first, then the change.
			var plan, res api.ChangeResponse
			if err := c.Do(cmd.Context(), "PUT", "/v1/state?dry_run=true", data, &plan); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if dry {
				return printChange(out, plan)
			}
			fmt.Fprint(out, plan.Plan.String())
			if err := c.Do(cmd.Context(), "PUT", "/v1/state", data, &res); err != nil {
				return err
			}
			if !samePlan(plan.Plan, res.Plan) {
				fmt.Fprint(out, "The state changed while the plan was shown; what was applied:\n"+res.Plan.String())
			}
			if res.Warning != "" {
				return fmt.Errorf("%s (run the same command again to retry)", res.Warning)
			}
			if len(res.Plan) > 0 {
				fmt.Fprintf(out, "Applied: revision %d.\n", res.Revision)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "the moat.yaml to apply, or - for standard input")
	cmd.Flags().BoolVar(&dry, "dry-run", false, "show the plan, change nothing")
	return cmd
}

func samePlan(a, b config.Plan) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

func nameOf(file string) string {
	if file == "-" {
		return "standard input"
	}
	return file
}

func newExport(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "export",
		Short:   "Print the desired state as a moat.yaml",
		Example: "  moat export > moat.yaml\n  moat export | moat apply -f -",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var res api.StateResponse
			if err := g.call(cmd, "GET", "/v1/state", nil, &res); err != nil {
				return err
			}
			out, err := config.Marshal(res.State)
			if err != nil {
				return err
			}
			_, err = cmd.OutOrStdout().Write(out)
			return err
		},
	}
}

func newStatus(g *globals) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:     "status",
		Short:   "Show the apps, their domains and each certificate's state",
		Example: "  moat status\n  moat status --json",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st api.StatusResponse
			if err := g.call(cmd, "GET", "/v1/status", nil, &st); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(st)
			}
			if st.Daemon {
				fmt.Fprintln(w, "daemon: running")
			} else {
				fmt.Fprintln(w, "daemon: not running (start it with `moat serve`); certificate states come from the daemon")
			}
			if st.Server.Domain != "" {
				fmt.Fprintf(w, "server: %s (%s)\n", st.Server.Domain, st.Server.Email)
			}
			certs := map[string]string{}
			for _, c := range st.Certificates {
				certs[c.Domain] = c.String()
			}
			if len(st.Apps) == 0 {
				fmt.Fprintln(w, "no apps")
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tDOMAIN\tUPSTREAM\tCERTIFICATE")
			for _, a := range st.Apps {
				for _, d := range a.Domains {
					c := certs[d]
					if c == "" {
						c = "-"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Name, d, a.Upstream, c)
				}
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newActivity(g *globals) *cobra.Command {
	var limit int
	var target string
	cmd := &cobra.Command{
		Use:     "activity",
		Short:   "Show the activity log: who changed what, when, from where",
		Example: "  moat activity\n  moat activity --target gitea --limit 20",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			q.Set("limit", fmt.Sprint(limit))
			if target != "" {
				q.Set("target", target)
			}
			var es []store.Entry
			if err := g.call(cmd, "GET", "/v1/activity?"+q.Encode(), nil, &es); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "WHEN\tWHO\tFROM\tACTION\tTARGET\tDETAIL")
			for _, e := range es {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", e.At.Local().Format(time.DateTime), e.Who, e.From, e.Action, e.Target, e.Detail)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().IntVar(&limit, "limit", 50, "how many entries, newest first")
	cmd.Flags().StringVar(&target, "target", "", "only entries about this app, domain or \"server\"")
	return cmd
}

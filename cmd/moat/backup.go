package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"moat/internal/api"
	"moat/internal/backup"
)

func newBackup(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "backup",
		Short: "Encrypted backups of moat and the apps, made by restic",
		Long: `backup drives restic to the repositories in moat.yaml (backup.repositories): a
directory, a REST server, S3 or SFTP, each encrypted by restic with a password
moat makes at init and keeps in <data>/keys/restic.password.`,
		Example: `  moat backup init
  moat backup run gitea
  moat backup list gitea`,
	}
	cmd.AddCommand(newBackupInit(g), newBackupRun(g), newBackupList(g), newBackupRestore(g), newBackupVerify(g), newBackupForget(g))
	return cmd
}

func newBackupInit(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "init",
		Short:   "Make the repositories, and the password that encrypts them (shown once)",
		Example: "  moat backup init",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out api.BackupInit
			if err := g.call(cmd, "POST", "/v1/backup/init", struct{}{}, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if out.Password != "" {
				fmt.Fprintf(w, "The repositories' password:\n\n    %s\n\n%s\n\n", out.Password, out.Warning)
			}
			if out.SSHKey != "" {
				fmt.Fprintf(w, "moat's SSH key for backups:\n\n    %s\n\n%s\n\n", out.SSHKey, out.SSHHint)
			}
			for _, r := range out.Repositories {
				fmt.Fprintf(w, "Repository %s is ready.\n", r)
			}
			for _, f := range out.Failed {
				fmt.Fprintf(w, "Repository %s: FAILED: %s\n", f.Repository, f.Error)
			}
			if len(out.Failed) > 0 {
				return fmt.Errorf("%d of %d repositories are not ready", len(out.Failed), len(out.Failed)+len(out.Repositories))
			}
			return nil
		},
	}
}

func newBackupRun(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "run [APP]",
		Short:   "Back an app's data up now, or moat itself (its store, certificates and keys)",
		Example: "  moat backup run gitea\n  moat backup run",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.BackupRequest
			if len(args) == 1 {
				req.App = args[0]
			}
			out, err := streamBackup(cmd, g, req)
			if err != nil {
				return err
			}
			printRuns(cmd.OutOrStdout(), out)
			return nil
		},
	}
}

// printRuns tells each repository's outcome of a backup.
func printRuns(w io.Writer, out []api.BackupRun) {
	for _, r := range out {
		if r.Error != "" {
			fmt.Fprintf(w, "%s: FAILED: %s\n", r.Repository, r.Error)
			continue
		}
		s := r.Summary
		fmt.Fprintf(w, "%s: snapshot %s: %d files (%d new, %d changed), %s added, in %s\n", r.Repository, s.SnapshotID,
			s.TotalFilesProcessed, s.FilesNew, s.FilesChanged, size(s.DataAdded), time.Duration(s.TotalDuration*float64(time.Second)).Round(time.Millisecond))
	}
}

// streamBackup runs a backup through the API, showing restic's
// progress on standard error as it goes: on one line rewritten in place
// on a terminal, a line every few seconds elsewhere (a log).
func streamBackup(cmd *cobra.Command, g *globals, req api.BackupRequest) ([]api.BackupRun, error) {
	c, done, err := g.client(cmd.Context())
	if err != nil {
		return nil, err
	}
	defer done()
	errw := cmd.ErrOrStderr()
	f, isFile := errw.(*os.File)
	tty := isFile && term.IsTerminal(int(f.Fd()))
	every := 5 * time.Second
	if tty {
		every = 0
	}
	var (
		last     time.Time
		out      []api.BackupRun
		problem  *api.Problem
		inPlace  bool
		finished bool
	)
	err = c.Stream(cmd.Context(), "POST", "/v1/backup/run", req, func(line []byte) error {
		var ev api.BackupEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return fmt.Errorf("moat daemon: decode answer: %w", err)
		}
		switch {
		case ev.Done:
			out, problem, finished = ev.Runs, ev.Error, true
		case ev.Progress != nil && time.Since(last) >= every:
			last = time.Now()
			if tty {
				fmt.Fprintf(errw, "\r\033[K%s", progressLine(ev.Repository, *ev.Progress))
				inPlace = true
			} else {
				fmt.Fprintln(errw, progressLine(ev.Repository, *ev.Progress))
			}
		}
		return nil
	})
	if inPlace {
		fmt.Fprintln(errw)
	}
	switch {
	case err != nil:
		return nil, err
	case !finished:
		return nil, errors.New("moat daemon: the backup's answer ended before its outcome: see moat activity for how it went")
	case problem != nil:
		printRuns(cmd.OutOrStdout(), out)
		return nil, &api.APIError{Status: 500, Body: api.Error{Error: *problem}}
	}
	return out, nil
}

// progressLine is a running backup's progress in words.
func progressLine(repo string, p backup.Progress) string {
	s := fmt.Sprintf("%s: %3.0f%%  %s of %s  %d of %d files", repo, 100*p.PercentDone, size(p.BytesDone), size(p.TotalBytes), p.FilesDone, p.TotalFiles)
	if p.SecondsRemaining > 0 {
		s += fmt.Sprintf("  ETA %s", (time.Duration(p.SecondsRemaining) * time.Second).String())
	}
	return s
}

// size is a byte count as people read it.
func size(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func newBackupList(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "list [APP]",
		Short:   "The snapshots of an app, or of moat itself, in each repository",
		Example: "  moat backup list gitea",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			path := "/v1/backup/snapshots"
			if len(args) == 1 {
				path += "?app=" + args[0]
			}
			var out []api.RepositorySnapshots
			if err := g.call(cmd, "GET", path, nil, &out); err != nil {
				return err
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "REPOSITORY\tSNAPSHOT\tTIME\tPATHS")
			for _, r := range out {
				if r.Error != "" {
					fmt.Fprintf(tw, "%s\t(%s)\t\t\n", r.Repository, r.Error)
				}
				for _, s := range r.Snapshots {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", r.Repository, s.Short, s.Time.Local().Format(time.DateTime), s.Paths)
				}
			}
			return tw.Flush()
		},
	}
}

func newBackupRestore(g *globals) *cobra.Command {
	var req api.RestoreRequest
	cmd := &cobra.Command{
		Use:     "restore [APP] --to DIR",
		Short:   "Write a snapshot (the newest, or --snapshot ID) under an empty directory",
		Example: "  moat backup restore gitea --to /var/tmp/restore\n  moat backup restore --snapshot 7e1ea4c4 --to /var/tmp/moat",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				req.App = args[0]
			}
			var out api.Restored
			if err := g.call(cmd, "POST", "/v1/backup/restore", req, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Snapshot %s from %s is under %s, at the files' full paths.\n", out.Snapshot, out.Repository, out.Target)
			return nil
		},
	}
	cmd.Flags().StringVar(&req.Target, "to", "", "an empty directory to restore into")
	cmd.Flags().StringVar(&req.Snapshot, "snapshot", "", "the snapshot's ID (moat backup list); the newest when not given")
	cmd.Flags().StringVar(&req.Repository, "repository", "", "the repository's name; the first when not given")
	return cmd
}

func newBackupVerify(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:     "verify",
		Short:   "Check every repository, reading back 5% of its data",
		Example: "  moat backup verify",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			var out []api.VerifyResult
			if err := g.call(cmd, "POST", "/v1/backup/verify", struct{}{}, &out); err != nil {
				return err
			}
			bad := 0
			for _, v := range out {
				if v.OK {
					fmt.Fprintf(cmd.OutOrStdout(), "%s: ok\n", v.Repository)
				} else {
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "%s: FAILED: %s\n", v.Repository, v.Error)
				}
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d repositories failed their check", bad, len(out))
			}
			return nil
		},
	}
}

func newBackupForget(g *globals) *cobra.Command {
	return &cobra.Command{
		Use:   "forget [APP]",
		Short: "Apply the retention policy now: remove the snapshots it does not keep",
		Long: `forget removes an app's snapshots (or moat's) beyond what the retention policy
keeps (the app's backup.keep, else backup.keep: 7 daily, 4 weekly and 6
monthly by default) and prunes the data no snapshot needs. Every backup run
does this after itself.`,
		Example: "  moat backup forget gitea",
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req api.BackupRequest
			if len(args) == 1 {
				req.App = args[0]
			}
			var out []api.ForgetResult
			if err := g.call(cmd, "POST", "/v1/backup/forget", req, &out); err != nil {
				return err
			}
			bad := 0
			for _, f := range out {
				if f.Error != "" {
					bad++
					fmt.Fprintf(cmd.OutOrStdout(), "%s: FAILED: %s\n", f.Repository, f.Error)
					continue
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s: kept %d snapshots, removed %d\n", f.Repository, len(f.Kept), len(f.Removed))
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d repositories failed", bad, len(out))
			}
			return nil
		},
	}
}

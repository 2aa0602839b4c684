package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"moat/internal/api"
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
	cmd.AddCommand(newBackupInit(g), newBackupRun(g), newBackupList(g), newBackupRestore(g), newBackupVerify(g))
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
			for _, r := range out.Repositories {
				fmt.Fprintf(w, "Repository %s is ready.\n", r)
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
			var out []api.BackupRun
			if err := g.call(cmd, "POST", "/v1/backup/run", req, &out); err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			for _, r := range out {
				if r.Error != "" {
					fmt.Fprintf(w, "%s: FAILED: %s\n", r.Repository, r.Error)
					continue
				}
				s := r.Summary
				fmt.Fprintf(w, "%s: snapshot %s: %d files (%d new, %d changed), %d bytes added, in %s\n", r.Repository, s.SnapshotID,
					s.TotalFilesProcessed, s.FilesNew, s.FilesChanged, s.DataAdded, time.Duration(s.TotalDuration*float64(time.Second)).Round(time.Millisecond))
			}
			return nil
		},
	}
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

// Package mail is moat's SMTP relay: the apps on the server send their
// transactional mail through it, and so does moat itself (alerts, sign-in
// codes). It enforces what a managed host enforces: the relay listens on
// loopback and private addresses only, each app logs in with its own
// credentials and may send only as <app>@<mail domain>, at most so many
// messages an hour; and it delivers what it accepted, through a smarthost
// or straight to each recipient's MX with a DKIM signature, retrying for
// five days before it bounces.
//
// A message is kept in the Store (and synced to disk) before the relay
// answers 250, and marked delivered before it is forgotten, so that a
// crash loses nothing; a crash between a delivery and its mark can send
// that one message again.
//
// It does not decide which alerts are worth a mail (package notify does),
// keep desired state (package config and the store do), or ban anyone
// (it reports failed logins to the guard through a hook).
package mail

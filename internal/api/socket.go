package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"moat/internal/store"
)

// ListenControl opens the control socket at path: mode 0600 in a 0700
// directory, and every connection's peer credentials are checked, so only
// root (and the daemon's own user) can drive moat. A stale socket left by
// a crash is replaced; a live one means another daemon runs, which is
// refused.
func ListenControl(path string, log *slog.Logger) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("control socket: %s exists and is not a socket: move it away", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("control socket: %s: another moat daemon is running (stop it first)", path)
		}
		os.Remove(path)
	}
	// The socket is 0600 right after it is bound; until then, and always,
	// the peer check below lets no other user through.
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("control socket: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket: %w", err)
	}
	return &peerListener{Listener: ln, log: log, self: os.Getuid()}, nil
}

// peerListener drops connections from users other than root and itself.
type peerListener struct {
	net.Listener
	log  *slog.Logger
	self int
}

// Peer is the process at the other end of a control connection.
type Peer struct {
	UID, PID int
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := peerOf(c)
		if err != nil {
			l.log.Warn("control socket: no peer credentials; closing", "err", err)
			c.Close()
			continue
		}
		if p.UID != 0 && p.UID != l.self {
			l.log.Warn("control socket: refused a connection from a user that is not root", "uid", p.UID, "pid", p.PID)
			c.Close()
			continue
		}
		return &peerConn{Conn: c, peer: p}, nil
	}
}

type peerConn struct {
	net.Conn
	peer Peer
}

func peerOf(c net.Conn) (Peer, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{}, errors.New("not a unix socket")
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{}, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{}, err
	}
	if credErr != nil {
		return Peer{}, credErr
	}
	return Peer{UID: int(cred.Uid), PID: int(cred.Pid)}, nil
}

// ControlContext is the http.Server ConnContext for the control socket:
// it records the peer as the actor of the requests on that connection.
func ControlContext(ctx context.Context, c net.Conn) context.Context {
	pc, ok := c.(*peerConn)
	if !ok {
		return ctx
	}
	who := "uid " + strconv.Itoa(pc.peer.UID)
	if pc.peer.UID == 0 {
		who = "root"
	}
	ctx = WithActor(ctx, store.Actor{Who: who + " (pid " + strconv.Itoa(pc.peer.PID) + ")", From: "control socket"})
	if pc.peer.UID == 0 {
		ctx = OnTheBox(ctx)
	}
	return ctx
}

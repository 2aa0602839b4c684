package config

import (
	"fmt"
	"path/filepath"
)

// TLS names a certificate the owner keeps in files (a Cloudflare origin
// certificate, one from the owner's own CA) instead of one moat orders:
// its domains place no ACME order, and the files are watched and
// reloaded when they change.
type TLS struct {
	// Cert is the PEM certificate chain, the leaf first.
	Cert string `yaml:"cert" json:"cert"`
	// Key is its PEM private key.
	Key string `yaml:"key" json:"key"`
}

// CertFile is a domain served from the owner's certificate files; Field
// is where they are set (apps[2].tls, server.tls).
type CertFile struct {
	Field  string
	Domain string
	TLS    TLS
}

// CertFiles lists the domains served from the owner's files: every
// domain of an app with tls set, and the admin host when server.tls is.
func (s State) CertFiles() []CertFile {
	var out []CertFile
	for i, a := range s.Apps {
		if a.TLS == (TLS{}) {
			continue
		}
		for _, d := range a.Domains {
			out = append(out, CertFile{Field: fmt.Sprintf("apps[%d].tls", i), Domain: d, TLS: a.TLS})
		}
	}
	if h := s.Server.AdminHost(); h != "" && s.Server.TLS != (TLS{}) {
		out = append(out, CertFile{Field: "server.tls", Domain: h, TLS: s.Server.TLS})
	}
	return out
}

// checkTLS: both files, each an absolute path.
func checkTLS(field string, t TLS, add func(field, value, problem, fix string)) {
	if t == (TLS{}) {
		return
	}
	for _, f := range []struct{ name, path, other string }{{"cert", t.Cert, "key"}, {"key", t.Key, "cert"}} {
		switch {
		case f.path == "":
			add(field+"."+f.name, "", "is empty while "+field+"."+f.other+" is set", "give both the certificate and its key, or neither (moat then orders one)")
		case !filepath.IsAbs(f.path):
			add(field+"."+f.name, f.path, "is not an absolute path", "write the file's full path, like /etc/ssl/moat/"+f.name+".pem")
		}
	}
}

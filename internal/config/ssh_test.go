package config

import (
	"strings"
	"testing"
)

const (
	testKey  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHeGH3+5TrOKd7UbhR4RrOr2TmfdTeADqCk4RD/cNjXj laptop"
	testKey2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBVd+Tw2Eya3x8Uo8Tk8+ORpQg7F8XP4kNs0LsdfdSTq ci"
)

func TestSSHValidate(t *testing.T) {
	tests := []struct {
		name string
		keys []SSHKey
		want []wantErr
	}{
		{"good", []SSHKey{{Title: "laptop", Key: testKey}, {Title: "ci", User: "deploy", Key: `from="10.0.0.0/8" ` + testKey2}, {Title: "laptop-deploy", User: "deploy", Key: testKey}}, nil},
		{"title missing", []SSHKey{{Key: testKey}}, []wantErr{{"ssh.keys[0].title", "", "is missing", "name the key, like laptop"}}},
		{"title twice", []SSHKey{{Title: "a", Key: testKey}, {Title: "a", Key: testKey2}}, []wantErr{{"ssh.keys[1].title", "a", "ssh.keys[0] too", "give each key its own title"}}},
		{"key twice for a user", []SSHKey{{Title: "a", Key: testKey}, {Title: "b", Key: testKey}}, []wantErr{{"ssh.keys[1].key", "SHA256:", "already authorized for root, as ssh.keys[0] (a)", "add each key once per user"}}},
		{"bad user", []SSHKey{{Title: "a", User: "Bad User", Key: testKey}}, []wantErr{{"ssh.keys[0].user", "Bad User", "is not a user name", "give the account the key logs in as, like root or deploy"}}},
		{"private key, not shown", []SSHKey{{Title: "a", Key: "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n-----END OPENSSH PRIVATE KEY-----"}}, []wantErr{{"ssh.keys[0].key", "(a private key, not shown)", "PRIVATE key", "treat it as leaked: remove its public key wherever it is authorized, make a new key with ssh-keygen -t ed25519 and add its .pub file (the one ending in .pub)"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := State{SSH: SSH{Keys: tt.keys}}
			// A repeated key is named by its fingerprint, which the
			// table cannot know ahead.
			probe := s.Clone()
			probe.Normalize()
			for i := range tt.want {
				if tt.want[i].Value == "SHA256:" {
					for _, fe := range fieldErrors(t, probe.Validate()) {
						if strings.HasPrefix(fe.Value, "SHA256:") {
							tt.want[i].Value = fe.Value
						}
					}
				}
			}
			checkValid(t, s, tt.want)
		})
	}
}

func TestSSHUserKeys(t *testing.T) {
	s := State{SSH: SSH{Keys: []SSHKey{{Title: "laptop", Key: testKey}, {Title: "ci", User: "deploy", Key: testKey2}, {Title: "phone", Key: testKey2}}}}
	s.Normalize()
	uk := s.SSHUserKeys()
	if len(uk) != 2 || uk[0].User != "root" || len(uk[0].Keys) != 2 || uk[1].User != "deploy" || uk[1].Keys[0].Title != "ci" {
		t.Errorf("%+v", uk)
	}
}

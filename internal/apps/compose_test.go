package apps

import (
	"reflect"
	"strings"
	"testing"
)

func TestComposePorts(t *testing.T) {
	file := `
services:
  web:
    image: gitea/gitea
    ports:
      - "3000:3000"
      - "127.0.0.1:2222:22"
      - "3001"
  db:
    image: postgres
    ports:
      - target: 5432
        published: "5432"
        host_ip: 0.0.0.0
      - target: 9000
  dns:
    ports:
      - "53:53/udp"
      - "[::1]:8053:53"
      - 6000-6005:6000-6005
`
	got, err := ComposePorts([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	want := []Published{
		{Service: "db", Port: "5432/tcp", HostIP: "0.0.0.0"},
		{Service: "dns", Port: "53/udp"},
		{Service: "dns", Port: "8053/tcp", HostIP: "[::1]"},
		{Service: "dns", Port: "6000-6005/tcp"},
		{Service: "web", Port: "3000/tcp"},
		{Service: "web", Port: "2222/tcp", HostIP: "127.0.0.1"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if !got[5].Loopback() || !got[2].Loopback() || got[0].Loopback() {
		t.Error("loopback")
	}
	for _, bad := range []struct{ file, want string }{
		{"services: {web: {ports: [\"${PORT}:80\"]}}", "uses a variable"},
		{"services: {web: {ports: [\"99999:80\"]}}", "not a port"},
		{"services: {web: {ports: [\"80:80/sctp\"]}}", "tcp and udp"},
		{"services: [", "compose file"},
	} {
		if _, err := ComposePorts([]byte(bad.file)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: %v, want %q", bad.file, err, bad.want)
		}
	}
	if r := ComposeRun("/srv/my app/compose.yaml"); r.Start != "docker compose -f '/srv/my app/compose.yaml' up -d" {
		t.Errorf("run: %+v", r)
	}
}

// Package testenv provides test helpers that run real parts for moat's
// integration tests: Pebble, Let's Encrypt's test ACME server, in-process,
// and an authoritative DNS server for Pebble (and tests) to resolve names with;
// and network namespaces joined by veth pairs (Netns, Link), for tests of
// what crosses a network, such as nftables rules, that must not touch the
// host's own network.
//
// It is meant to be imported only from _test.go files; it is not for
// production code.
package testenv

// Package testenv provides test helpers that run real parts for moat's
// integration tests: Pebble, Let's Encrypt's test ACME server, in-process,
// and an authoritative DNS server for Pebble (and tests) to resolve names with.
//
// It is meant to be imported only from _test.go files; it is not for
// production code.
package testenv

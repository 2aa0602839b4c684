//go:build race

package testenv

// raceEnabled builds child binaries with the race detector too.
const raceEnabled = true

// Race reports whether the tests run with the race detector, which slows
// everything several times: timing bounds use it to stay meaningful.
const Race = raceEnabled

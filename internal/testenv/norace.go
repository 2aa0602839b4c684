//go:build !race

package testenv

const raceEnabled = false

// Race reports whether the tests run with the race detector.
const Race = raceEnabled

package auth

// OnVerify makes s call f with each hash a password is checked against.
func (s *Service) OnVerify(f func(hash string)) {
	s.verifyMu.Lock()
	defer s.verifyMu.Unlock()
	s.verifyHook = f
}

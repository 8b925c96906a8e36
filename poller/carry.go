package poller

// CarryStatus gives p, a Poller built to replace prev (a config reload that
// changed the strategy or the rules), prev's status, so that the health
// the relay reports (last success, failures in a row, freshness) goes on
// instead of starting over. It does nothing once p ended a cycle of its
// own, or when prev is nil or p itself.
func (p *Poller) CarryStatus(prev *Poller) {
	if prev == nil || prev == p {
		return
	}
	prev.mu.Lock()
	st := prev.status
	prev.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.status.Cycles == 0 {
		p.status = st
	}
}

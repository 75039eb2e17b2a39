package harness

import (
	"io"
	"net"
	"sync"
)

// TCPProxy forwards a loopback port to a target address. Cut closes the listener and every
// open connection - to the sidecar, the server behind it has vanished (a real network fault,
// without stopping a server other tests share); Restore listens on the same port again.
type TCPProxy struct {
	Addr   string
	target string

	mu    sync.Mutex
	ln    net.Listener
	conns map[net.Conn]struct{}
	// release is non-nil while replies are held (HoldReplies): closed to let them pass.
	release chan struct{}
	// heldReply is closed once a reply byte arrived while replies were held.
	heldReply chan struct{}
}

// NewTCPProxy starts forwarding a free port to target.
func NewTCPProxy(target string) (*TCPProxy, error) {
	addr, err := FreeAddr()
	if err != nil {
		return nil, err
	}
	p := &TCPProxy{Addr: addr, target: target, conns: map[net.Conn]struct{}{}}
	return p, p.Restore()
}

// Restore (re)starts listening on Addr.
func (p *TCPProxy) Restore() error {
	ln, err := net.Listen("tcp", p.Addr)
	if err != nil {
		return err
	}
	p.mu.Lock()
	p.ln = ln
	p.mu.Unlock()
	go p.accept(ln)
	return nil
}

func (p *TCPProxy) accept(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		go p.pipeReplies(c, up)
		go p.pipe(up, c)
	}
}

func (p *TCPProxy) pipe(dst, src net.Conn) {
	_, _ = io.Copy(dst, src)
	p.drop(dst, src)
}

// drop closes a connection pair and forgets it.
func (p *TCPProxy) drop(dst, src net.Conn) {
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	p.mu.Unlock()
}

// pipeReplies copies the target's replies to the client, holding them while HoldReplies is
// in force: the server has answered, the client has not heard it yet.
func (p *TCPProxy) pipeReplies(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			release, held := p.release, p.heldReply
			p.mu.Unlock()
			if release != nil {
				select {
				case <-held:
				default:
					close(held)
				}
				<-release
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				break
			}
		}
		if err != nil {
			break
		}
	}
	p.drop(dst, src)
}

// HoldReplies holds every reply from the target from now on (requests still pass) until
// ReleaseReplies: the moment between a server's answer and its client hearing it, made to
// last. It returns a channel closed once a reply is held.
func (p *TCPProxy) HoldReplies() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release == nil {
		p.release, p.heldReply = make(chan struct{}), make(chan struct{})
	}
	return p.heldReply
}

// ReleaseReplies lets held and later replies pass.
func (p *TCPProxy) ReleaseReplies() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.release != nil {
		close(p.release)
		p.release = nil
	}
}

// Cut stops accepting and drops every connection.
func (p *TCPProxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.ln != nil {
		p.ln.Close()
		p.ln = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]struct{}{}
}

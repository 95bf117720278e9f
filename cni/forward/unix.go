package forward

import (
	"os"
	"syscall"
	"unsafe"
)

// The plugin reaches the agent and looks up links with package syscall
// rather than package net: net pulls in the C resolver when cgo is on (the
// default of a plain `go build`), and with it the dynamic loader, which
// added about 1 ms to every start of the binary here (2.9 against 2.0 ms
// per run of `romana-cni --version`, 200 runs). Without net the binary is
// static however it is built (TestStatic in cmd/romana-cni).

// unixConn is a connected unix stream socket, pollable (deadlines work).
type unixConn struct{ *os.File }

// dialUnix connects to the unix stream socket at path. Its errors are
// *os.SyscallError wrapping the errno (ENOENT, ECONNREFUSED, ...).
func dialUnix(path string) (*unixConn, error) {
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	for {
		err = syscall.Connect(fd, &syscall.SockaddrUnix{Name: path})
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	if err := syscall.SetNonblock(fd, true); err != nil {
		syscall.Close(fd)
		return nil, os.NewSyscallError("setnonblock", err)
	}
	return &unixConn{os.NewFile(uintptr(fd), path)}, nil
}

// CloseWrite shuts the sending side down: the agent reads the request to
// its end.
func (c *unixConn) CloseWrite() error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Shutdown(int(fd), syscall.SHUT_WR) }); err != nil {
		return err
	}
	return os.NewSyscallError("shutdown", serr)
}

// linkExists reports whether the calling thread's network namespace has a
// link named name (SIOCGIFINDEX). Only "no such device" means no; any
// other failure answers yes, since the caller then keeps what it has.
func linkExists(name string) bool {
	if len(name) >= syscall.IFNAMSIZ {
		return false
	}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return true
	}
	defer syscall.Close(fd)
	var ifr [40]byte // struct ifreq: the name, then a 24-byte union
	copy(ifr[:syscall.IFNAMSIZ-1], name)
	_, _, errno := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.SIOCGIFINDEX, uintptr(unsafe.Pointer(&ifr[0])))
	return errno != syscall.ENODEV
}

package plan

import (
	"encoding/binary"
	"net/netip"
)

// u128 is an unsigned 128-bit integer used for address arithmetic. IPv4
// addresses occupy the low 32 bits; IPv6 addresses all 128.
type u128 struct{ hi, lo uint64 }

func fromAddr(a netip.Addr) u128 {
	if a.Is4() {
		b := a.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := a.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

func (u u128) addr(is4 bool) netip.Addr {
	if is4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(u.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], u.hi)
	binary.BigEndian.PutUint64(b[8:], u.lo)
	return netip.AddrFrom16(b)
}

func (u u128) or(v u128) u128  { return u128{u.hi | v.hi, u.lo | v.lo} }
func (u u128) and(v u128) u128 { return u128{u.hi & v.hi, u.lo & v.lo} }

func (u u128) shl(n int) u128 {
	switch {
	case n <= 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{hi: u.lo << (n - 64)}
	default:
		return u128{hi: u.hi<<n | u.lo>>(64-n), lo: u.lo << n}
	}
}

func (u u128) shr(n int) u128 {
	switch {
	case n <= 0:
		return u
	case n >= 128:
		return u128{}
	case n >= 64:
		return u128{lo: u.hi >> (n - 64)}
	default:
		return u128{hi: u.hi >> n, lo: u.lo>>n | u.hi<<(64-n)}
	}
}

// ones returns a value with the low n bits set.
func ones(n int) u128 {
	switch {
	case n <= 0:
		return u128{}
	case n >= 128:
		return u128{^uint64(0), ^uint64(0)}
	case n >= 64:
		return u128{hi: ^uint64(0) >> (128 - n), lo: ^uint64(0)}
	default:
		return u128{lo: ^uint64(0) >> (64 - n)}
	}
}

// field returns a mask of width bits whose lowest bit is at shift.
func field(width, shift int) u128 { return ones(width).shl(shift) }

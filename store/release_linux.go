package store

import "syscall"

const canRelease = true

// releasePages advises the kernel that the n bytes mapped at addr are not
// needed: their page table entries go, the file's pages stay cached, and
// the next access maps them again with the file's current contents.
func releasePages(addr uintptr, n int64) {
	if addr == 0 || n <= 0 {
		return
	}
	_, _, _ = syscall.Syscall(syscall.SYS_MADVISE, addr, uintptr(n), syscall.MADV_DONTNEED)
}

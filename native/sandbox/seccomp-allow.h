// PROVISIONAL
#ifdef __NR_access
ALLOW(__NR_access)
#endif
#ifdef __NR_arch_prctl
ALLOW(__NR_arch_prctl)
#endif
#ifdef __NR_brk
ALLOW(__NR_brk)
#endif
#ifdef __NR_capget
ALLOW(__NR_capget)
#endif
#ifdef __NR_capset
ALLOW(__NR_capset)
#endif
#ifdef __NR_chroot
ALLOW(__NR_chroot)
#endif
#ifdef __NR_clock_gettime
ALLOW(__NR_clock_gettime)
#endif
#ifdef __NR_clock_nanosleep
ALLOW(__NR_clock_nanosleep)
#endif
#ifdef __NR_clone
ALLOW(__NR_clone)
#endif
#ifdef __NR_clone3
ALLOW(__NR_clone3)
#endif
#ifdef __NR_close
ALLOW(__NR_close)
#endif
#ifdef __NR_close_range
ALLOW(__NR_close_range)
#endif
#ifdef __NR_copy_file_range
ALLOW(__NR_copy_file_range)
#endif
#ifdef __NR_dup
ALLOW(__NR_dup)
#endif
#ifdef __NR_dup2
ALLOW(__NR_dup2)
#endif
#ifdef __NR_dup3
ALLOW(__NR_dup3)
#endif
#ifdef __NR_epoll_create1
ALLOW(__NR_epoll_create1)
#endif
#ifdef __NR_epoll_ctl
ALLOW(__NR_epoll_ctl)
#endif
#ifdef __NR_epoll_pwait
ALLOW(__NR_epoll_pwait)
#endif
#ifdef __NR_epoll_wait
ALLOW(__NR_epoll_wait)
#endif
#ifdef __NR_eventfd2
ALLOW(__NR_eventfd2)
#endif
#ifdef __NR_execve
ALLOW(__NR_execve)
#endif
#ifdef __NR_exit
ALLOW(__NR_exit)
#endif
#ifdef __NR_exit_group
ALLOW(__NR_exit_group)
#endif
#ifdef __NR_fadvise64
ALLOW(__NR_fadvise64)
#endif
#ifdef __NR_fallocate
ALLOW(__NR_fallocate)
#endif
#ifdef __NR_fchdir
ALLOW(__NR_fchdir)
#endif
#ifdef __NR_fchmod
ALLOW(__NR_fchmod)
#endif
#ifdef __NR_fchmodat
ALLOW(__NR_fchmodat)
#endif
#ifdef __NR_fchown
ALLOW(__NR_fchown)
#endif
#ifdef __NR_fchownat
ALLOW(__NR_fchownat)
#endif
#ifdef __NR_fcntl
ALLOW(__NR_fcntl)
#endif
#ifdef __NR_fdatasync
ALLOW(__NR_fdatasync)
#endif
#ifdef __NR_fgetxattr
ALLOW(__NR_fgetxattr)
#endif
#ifdef __NR_flistxattr
ALLOW(__NR_flistxattr)
#endif
#ifdef __NR_flock
ALLOW(__NR_flock)
#endif
#ifdef __NR_fremovexattr
ALLOW(__NR_fremovexattr)
#endif
#ifdef __NR_fsetxattr
ALLOW(__NR_fsetxattr)
#endif
#ifdef __NR_fstat
ALLOW(__NR_fstat)
#endif
#ifdef __NR_fstatfs
ALLOW(__NR_fstatfs)
#endif
#ifdef __NR_fsync
ALLOW(__NR_fsync)
#endif
#ifdef __NR_ftruncate
ALLOW(__NR_ftruncate)
#endif
#ifdef __NR_futex
ALLOW(__NR_futex)
#endif
#ifdef __NR_getcwd
ALLOW(__NR_getcwd)
#endif
#ifdef __NR_getdents
ALLOW(__NR_getdents)
#endif
#ifdef __NR_getdents64
ALLOW(__NR_getdents64)
#endif
#ifdef __NR_getegid
ALLOW(__NR_getegid)
#endif
#ifdef __NR_geteuid
ALLOW(__NR_geteuid)
#endif
#ifdef __NR_getgid
ALLOW(__NR_getgid)
#endif
#ifdef __NR_getpid
ALLOW(__NR_getpid)
#endif
#ifdef __NR_getppid
ALLOW(__NR_getppid)
#endif
#ifdef __NR_getrandom
ALLOW(__NR_getrandom)
#endif
#ifdef __NR_getrusage
ALLOW(__NR_getrusage)
#endif
#ifdef __NR_getsockname
ALLOW(__NR_getsockname)
#endif
#ifdef __NR_getsockopt
ALLOW(__NR_getsockopt)
#endif
#ifdef __NR_gettid
ALLOW(__NR_gettid)
#endif
#ifdef __NR_gettimeofday
ALLOW(__NR_gettimeofday)
#endif
#ifdef __NR_getuid
ALLOW(__NR_getuid)
#endif
#ifdef __NR_getxattr
ALLOW(__NR_getxattr)
#endif
#ifdef __NR_ioctl
ALLOW(__NR_ioctl)
#endif
#ifdef __NR_kill
ALLOW(__NR_kill)
#endif
#ifdef __NR_lgetxattr
ALLOW(__NR_lgetxattr)
#endif
#ifdef __NR_linkat
ALLOW(__NR_linkat)
#endif
#ifdef __NR_listxattr
ALLOW(__NR_listxattr)
#endif
#ifdef __NR_llistxattr
ALLOW(__NR_llistxattr)
#endif
#ifdef __NR_lremovexattr
ALLOW(__NR_lremovexattr)
#endif
#ifdef __NR_lseek
ALLOW(__NR_lseek)
#endif
#ifdef __NR_lsetxattr
ALLOW(__NR_lsetxattr)
#endif
#ifdef __NR_madvise
ALLOW(__NR_madvise)
#endif
#ifdef __NR_memfd_create
ALLOW(__NR_memfd_create)
#endif
#ifdef __NR_mkdirat
ALLOW(__NR_mkdirat)
#endif
#ifdef __NR_mknodat
ALLOW(__NR_mknodat)
#endif
#ifdef __NR_mmap
ALLOW(__NR_mmap)
#endif
#ifdef __NR_mprotect
ALLOW(__NR_mprotect)
#endif
#ifdef __NR_mremap
ALLOW(__NR_mremap)
#endif
#ifdef __NR_munmap
ALLOW(__NR_munmap)
#endif
#ifdef __NR_name_to_handle_at
ALLOW(__NR_name_to_handle_at)
#endif
#ifdef __NR_nanosleep
ALLOW(__NR_nanosleep)
#endif
#ifdef __NR_newfstatat
ALLOW(__NR_newfstatat)
#endif
#ifdef __NR_open_by_handle_at
ALLOW(__NR_open_by_handle_at)
#endif
#ifdef __NR_openat
ALLOW(__NR_openat)
#endif
#ifdef __NR_openat2
ALLOW(__NR_openat2)
#endif
#ifdef __NR_pipe2
ALLOW(__NR_pipe2)
#endif
#ifdef __NR_pkey_alloc
ALLOW(__NR_pkey_alloc)
#endif
#ifdef __NR_poll
ALLOW(__NR_poll)
#endif
#ifdef __NR_ppoll
ALLOW(__NR_ppoll)
#endif
#ifdef __NR_prctl
ALLOW(__NR_prctl)
#endif
#ifdef __NR_pread64
ALLOW(__NR_pread64)
#endif
#ifdef __NR_preadv
ALLOW(__NR_preadv)
#endif
#ifdef __NR_preadv2
ALLOW(__NR_preadv2)
#endif
#ifdef __NR_prlimit64
ALLOW(__NR_prlimit64)
#endif
#ifdef __NR_pwrite64
ALLOW(__NR_pwrite64)
#endif
#ifdef __NR_pwritev
ALLOW(__NR_pwritev)
#endif
#ifdef __NR_pwritev2
ALLOW(__NR_pwritev2)
#endif
#ifdef __NR_read
ALLOW(__NR_read)
#endif
#ifdef __NR_readlink
ALLOW(__NR_readlink)
#endif
#ifdef __NR_readlinkat
ALLOW(__NR_readlinkat)
#endif
#ifdef __NR_readv
ALLOW(__NR_readv)
#endif
#ifdef __NR_recvfrom
ALLOW(__NR_recvfrom)
#endif
#ifdef __NR_recvmsg
ALLOW(__NR_recvmsg)
#endif
#ifdef __NR_removexattr
ALLOW(__NR_removexattr)
#endif
#ifdef __NR_renameat
ALLOW(__NR_renameat)
#endif
#ifdef __NR_renameat2
ALLOW(__NR_renameat2)
#endif
#ifdef __NR_restart_syscall
ALLOW(__NR_restart_syscall)
#endif
#ifdef __NR_rseq
ALLOW(__NR_rseq)
#endif
#ifdef __NR_rt_sigaction
ALLOW(__NR_rt_sigaction)
#endif
#ifdef __NR_rt_sigprocmask
ALLOW(__NR_rt_sigprocmask)
#endif
#ifdef __NR_rt_sigreturn
ALLOW(__NR_rt_sigreturn)
#endif
#ifdef __NR_sched_getaffinity
ALLOW(__NR_sched_getaffinity)
#endif
#ifdef __NR_sched_yield
ALLOW(__NR_sched_yield)
#endif
#ifdef __NR_seccomp
ALLOW(__NR_seccomp)
#endif
#ifdef __NR_sendmsg
ALLOW(__NR_sendmsg)
#endif
#ifdef __NR_sendto
ALLOW(__NR_sendto)
#endif
#ifdef __NR_set_robust_list
ALLOW(__NR_set_robust_list)
#endif
#ifdef __NR_set_tid_address
ALLOW(__NR_set_tid_address)
#endif
#ifdef __NR_setfsgid
ALLOW(__NR_setfsgid)
#endif
#ifdef __NR_setfsuid
ALLOW(__NR_setfsuid)
#endif
#ifdef __NR_setxattr
ALLOW(__NR_setxattr)
#endif
#ifdef __NR_sigaltstack
ALLOW(__NR_sigaltstack)
#endif
#ifdef __NR_socketpair
ALLOW(__NR_socketpair)
#endif
#ifdef __NR_statfs
ALLOW(__NR_statfs)
#endif
#ifdef __NR_statx
ALLOW(__NR_statx)
#endif
#ifdef __NR_symlinkat
ALLOW(__NR_symlinkat)
#endif
#ifdef __NR_sync_file_range
ALLOW(__NR_sync_file_range)
#endif
#ifdef __NR_syncfs
ALLOW(__NR_syncfs)
#endif
#ifdef __NR_sysinfo
ALLOW(__NR_sysinfo)
#endif
#ifdef __NR_tgkill
ALLOW(__NR_tgkill)
#endif
#ifdef __NR_umask
ALLOW(__NR_umask)
#endif
#ifdef __NR_uname
ALLOW(__NR_uname)
#endif
#ifdef __NR_unlinkat
ALLOW(__NR_unlinkat)
#endif
#ifdef __NR_utimensat
ALLOW(__NR_utimensat)
#endif
#ifdef __NR_wait4
ALLOW(__NR_wait4)
#endif
#ifdef __NR_write
ALLOW(__NR_write)
#endif
#ifdef __NR_writev
ALLOW(__NR_writev)
#endif
#ifdef __NR_io_uring_setup
FAIL_ENOSYS(__NR_io_uring_setup)
#endif

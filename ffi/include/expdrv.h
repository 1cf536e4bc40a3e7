/* SPDX-License-Identifier: (GPL-2.0 WITH Linux-syscall-note) OR MIT */
/*
 * expdrv.h - expanded device driver fault message ABI, version 1.
 *
 * The binary contract between the expanded device driver (a kernel module
 * that detects hardware faults) and the user-space bridge that receives its
 * fault messages over netlink multicast and the /dev/expdrv0 char device.
 * All integers are in host byte order.  Usable from a kernel module and from
 * user-space C programs.
 */
#ifndef _UAPI_LINUX_EXPDRV_H
#define _UAPI_LINUX_EXPDRV_H

#ifdef __KERNEL__
#include <linux/types.h>
#include <linux/ioctl.h>
#else
#include <linux/types.h>
#include <sys/ioctl.h>
#endif

#define EXPDRV_ABI_VERSION      1

/* Section 1.1: netlink message types (nlmsghdr.nlmsg_type). */
#define EXPDRV_MSG_FAULT        0x0010  /* a fault condition was detected   */
#define EXPDRV_MSG_CLEAR        0x0011  /* a fault condition ended          */
/* Other types >= 0x0010 are reserved: readers count and skip them. */

/* Netlink defaults used by the simulator (no driver loaded). */
#define EXPDRV_SIM_NETLINK_PROTOCOL  2  /* NETLINK_USERSOCK */
#define EXPDRV_SIM_NETLINK_GROUP     1

/* Section 2: the fault record. */
#define EXPDRV_RECORD_MAGIC     0x4D465845U  /* "EXFM" in memory order */
#define EXPDRV_RECORD_HDR_LEN   64
#define EXPDRV_RECORD_MAX       65535
#define EXPDRV_KEYWORD_MAX      1023

#define EXPDRV_F_SNAPSHOT       (1U << 0)  /* replayed by EXPDRV_IOC_SNAPSHOT */
#define EXPDRV_F_TEST           (1U << 1)  /* injected by an administrator test */

/* Severity (expdrv_record.severity). Other values are malformed. */
#define EXPDRV_SEV_INFO         0
#define EXPDRV_SEV_WARNING      1
#define EXPDRV_SEV_ERROR        2
#define EXPDRV_SEV_FATAL        3

/*
 * struct expdrv_record - fixed 64-byte record header, followed by the
 * keyword and detail bytes located by offset/length inside
 * [header_len, total_len).  On the char device, records are padded to
 * ALIGN4(total_len); inside a netlink datagram a record is only 4-byte
 * aligned, so readers must not assume 8-byte alignment of the u64 fields.
 */
struct expdrv_record {
	__u32 magic;           /*  0: EXPDRV_RECORD_MAGIC                    */
	__u16 version;         /*  4: EXPDRV_ABI_VERSION                     */
	__u16 header_len;      /*  6: 64 in v1; readers accept larger        */
	__u32 total_len;       /*  8: header + variable data, no padding     */
	__u32 flags;           /* 12: EXPDRV_F_*                             */
	__u64 sequence;        /* 16: per driver load, starts at 1           */
	__u64 timestamp_ns;    /* 24: CLOCK_MONOTONIC at detection           */
	__u16 category;        /* 32: EXPDRV_CAT_*                           */
	__u16 severity;        /* 34: EXPDRV_SEV_*                           */
	__u32 event_code;      /* 36: EXPDRV_EV_* (high 16 bits = category)  */
	__u32 device_index;    /* 40: ifindex, SCSI host number, or 0        */
	__u16 keyword_offset;  /* 44: from record start; 0 when none         */
	__u16 keyword_len;     /* 46: 0..1023, UTF-8, no NUL                 */
	__u16 detail_offset;   /* 48: from record start; 0 when none         */
	__u16 detail_len;      /* 50: opaque detail bytes                    */
	__u32 driver_id;       /* 52: instance of the sending driver         */
	__u64 reserved;        /* 56: zero; ignored by readers               */
	/* 64: variable data (keyword, detail) */
};

/* Section 3: categories (the name is what a monitor configuration uses). */
#define EXPDRV_CAT_NIC          1   /* "NIC"   */
#define EXPDRV_CAT_FC           2   /* "FC"    */
#define EXPDRV_CAT_HA_SS        3   /* "HA/SS" */
#define EXPDRV_CAT_HA_AM        4   /* "HA/AM" */
#define EXPDRV_CAT_HA_RS        5   /* "HA/RS" */
#define EXPDRV_CAT_SPS          6   /* "SPS"   */
#define EXPDRV_CATEGORY_NAME_MAX 32

/* Section 3: event codes, high 16 bits = category code. */
#define EXPDRV_EV_NIC_LINK_DOWN     0x00010001U
#define EXPDRV_EV_NIC_LINK_UP       0x00010002U  /* sent as EXPDRV_MSG_CLEAR */
#define EXPDRV_EV_NIC_HW_ERROR      0x00010003U
#define EXPDRV_EV_FC_PORT_OFFLINE   0x00020001U
#define EXPDRV_EV_FC_PORT_ONLINE    0x00020002U  /* clear */
#define EXPDRV_EV_FC_PATH_LOST      0x00020003U
#define EXPDRV_EV_GENERIC_FATAL(cat) ((((__u32)(cat)) << 16) | 0x00FFU)

/* Section 4: ioctl interface of the char device. */
struct expdrv_info {              /* 56 bytes */
	__u32 abi_version;        /*  0: EXPDRV_ABI_VERSION                 */
	__u32 record_max;         /*  4: largest total_len the driver sends */
	__u64 last_sequence;      /*  8: sequence of the newest record sent */
	__u32 netlink_protocol;   /* 16: P of section 1                     */
	__u32 netlink_group;      /* 20: G of section 1                     */
	__u8  driver_name[32];    /* 24: NUL-padded                         */
};

#define EXPDRV_IOC_MAGIC        'X'
#define EXPDRV_IOC_GET_INFO     _IOR(EXPDRV_IOC_MAGIC, 0x01, struct expdrv_info)
#define EXPDRV_IOC_SNAPSHOT     _IOW(EXPDRV_IOC_MAGIC, 0x02, __u64)
#define EXPDRV_IOC_ACK          _IOW(EXPDRV_IOC_MAGIC, 0x03, __u64)

#endif /* _UAPI_LINUX_EXPDRV_H */

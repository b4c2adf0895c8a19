/**
 * The help text of each verb (usage line, what it does, its options), in a module that imports
 * nothing: `blocklayer --help` and `blocklayer VERB --help` load no verb, and each verb module
 * takes its own from here. serve keeps its help beside its flags (src/cli/serve.ts).
 */

export const INFO_HELP = `usage: blocklayer info [-f FMT] [-U] [--output=human|json] [--snapshot S] [--backing-chain] IMAGE
Format, virtual size, cluster size, backing file, snapshots and format-specific data of an image, like qemu-img info.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  -U, --force-share    read-only, sharing everything: read an image another process holds read-write
  --output FMT         human (the default) or json: qemu-img info --output=json's shape
  --json               the same as --output=json
  --snapshot S         describe snapshot S (id or name) of a qcow2 image
  --backing-chain      describe every image of the backing chain
  -h, --help           this help`;

export const MAP_HELP = `usage: blocklayer map [-f FMT] [-U] [--output=json|human] [--snapshot S] IMAGE
The allocation map of an image's guest view, like qemu-img map --output=json.
Which ranges hold data, read as zeros, and come from which layer of the backing chain.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  -U, --force-share    read-only, sharing everything: read an image another process holds read-write
  --output FMT         json (the default) or human: qemu-img map's table of the ranges
                       holding data (offset, length, where in which file)
  --json               the same as --output=json
  --snapshot S         map snapshot S (id or name) of a qcow2 image
  -h, --help           this help`;

export const CHECK_HELP = `usage: blocklayer check [-f FMT] [-U] [-r leaks|all] [--output=human|json] IMAGE
Checks a qcow2 image's metadata for consistency, like qemu-img check.
Exit codes as qemu-img's: 0 clean, 1 check failed, 2 corruptions, 3 leaked clusters, 63 format without checks.

  -f, --format FMT     image format (raw, qcow2); given, it is used without probing
  -r, --repair MODE    repair leaks, or all (leaks and corruptions); without it the image is opened read-only
  -U, --force-share    read-only, sharing everything: read an image another process holds read-write
  --output FMT         human (the default) or json: qemu-img check --output=json's shape
  --json               the same as --output=json
  -h, --help           this help`;

export const CONVERT_HELP = `usage: blocklayer convert [-f FMT] [-U] [-O raw|qcow2] [-t none|writeback] [-c] [-o k=v,…] [--snapshot S] [-p] [-q] IMAGE OUTPUT
The guest view of IMAGE as a sparse raw file or a new image of another format (qcow2, compressed or not; vdi, …), like qemu-img convert.
The output is written under a temporary name and renamed when complete.

  -f, --format FMT          input format (raw, qcow2); given, it is used without probing
  -U, --force-share         read the input sharing everything (an image another process holds read-write)
  -O, --output-format FMT   output format: raw (the default), qcow2, or a format whose driver
                            creates images: vdi (an unknown name lists them)
  -t, --cache MODE          how a raw output is written: writeback (the default: through the
                            page cache) or none (past it, O_DIRECT); flushed either way
  -c, --compress            compress every data cluster (-O qcow2)
  -o, --options k=v,…       creation options of the output format: qcow2's (cluster_size,
                            compression_type, compat, …), vdi's (static=on|off)
  --snapshot S              convert snapshot S (id or name) of a qcow2 image
  -p, --progress            show progress (the default on a terminal); where stderr is
                            not a terminal, qemu-img's "    (x.xx/100%)" lines on stdout
  -q, --quiet               no progress
  -h, --help                this help`;

export const CREATE_HELP = `usage: blocklayer create [-f FMT] [-b BACKING -F FMT] [-o k=v,…] [-q] FILE [SIZE]
Makes a new image, like qemu-img create (SIZE takes suffixes: 64k, 20G).

  -f, --format FMT          image format: raw (the default), qcow2, or a format whose driver
                            creates images: vdi (an unknown name lists them)
  -b, --backing BACKING     backing file of an overlay (its size is the default SIZE)
  -F, --backing-format FMT  format of the backing file (required with -b)
  -o, --options k=v,…       options of the format, by qemu-img's names:
                            qcow2: cluster_size, compat, compression_type, extended_l2,
                            lazy_refcounts, refcount_bits, data_file, data_file_raw, preallocation
                            vdi: static=on|off (a preallocated image)
  -q, --quiet               no "Formatting …" line
  -h, --help                this help`;

export const COMMIT_HELP = `usage: blocklayer commit [-f qcow2] [-d] [-p] [-q] OVERLAY
Merges a qcow2 overlay into its backing file, then empties it, like qemu-img commit.

  -f, --format qcow2   the overlay's format (only qcow2)
  -d                   keep the overlay's data (do not empty it)
  -p, --progress       show progress
  -q, --quiet          no "Image committed." line
  -h, --help           this help`;

export const BENCH_HELP = `usage: blocklayer bench [--filename F | --drive STR | --driver null|memory] [--rw R] [--bs N] [--iodepth N] [--runtime S] [--iops N …] [--json] [--plot F.svg]
A fio-like job on any target, with disk I/O limits by their QEMU names.

  --filename F              the target: an image file (format probed), rbd:pool/image, or json:{…} (a node tree)
  -f, --format FMT          the image format (raw, qcow2)
  --drive STR               a QEMU -drive string (file=…,format=…,iops=…,group=…,aio=…)
  --driver null|memory      a target without a file (default null), of --target-size bytes (1G)
  --latency-ns N            the null target's latency
  --rw R                    read, write, randread, randwrite, rw, randrw (fio's)
  --bs N                    request size (4k, 64k, 1M, …)
  --iodepth N               requests in flight per drive
  --runtime S               seconds to run
  --size N                  bytes of the target the job covers
  --drives N                drives running the job at once
  --group NAME              throttle group the drives share
  --rwmixread PCT           reads in a mixed job, percent
  --clock real|virtual      virtual runs instantly on a virtual clock (null and memory targets
                            only: refused on a file, nbd, http or rbd target)
  --seed N                  seed of random offsets
  --slice-ms N              reporting interval
  --iops N, --bps SIZE, …   limits by their QEMU names (iops-rd, iops-wr, bps-rd, bps-wr, *-max, *-max-length, iops-size);
                            bps and iops-size take sizes (1M, 8k)
  --json                    the result as JSON
  --plot F.svg              draw the result
  --compare fio|qemu-img    run the equivalent job of that tool on the same file
  -q, --quiet               no progress bar
  -h, --help                this help`;

export const BITMAP_HELP = `usage: blocklayer bitmap (--merge SOURCE | --add | --remove | --clear | --enable | --disable)... [-b SOURCE_FILE [-F SOURCE_FMT]] [-g GRANULARITY] [--object OBJECTDEF] [--image-opts | -f FMT] FILENAME BITMAP
Changes the persistent dirty bitmap BITMAP of a qcow2 image, like qemu-img bitmap: the operations run in the order given.

  --add                     create BITMAP, persistent, recording future writes
  --remove                  remove BITMAP
  --clear                   clear every bit of BITMAP
  --enable                  make BITMAP record future writes
  --disable                 make BITMAP stop recording writes
  --merge SOURCE            add the dirty bits of bitmap SOURCE to BITMAP
  -b SOURCE_FILE            find the --merge sources in this image (opened read-only)
  -F SOURCE_FMT             format of SOURCE_FILE (raw, qcow2); probed when absent
  -g GRANULARITY            bytes per bit of an added bitmap: a power of 2 from 512 (suffixes: 64k, 1M);
                            the default is the image's cluster size within 4k … 64k
  --object OBJECTDEF        refused: no secrets (encrypted images are not supported)
  --image-opts              FILENAME is the node's options (driver=qcow2,file.driver=file,file.filename=F)
  -f, --format FMT          image format (raw, qcow2); given, it is used without probing
  -h, --help                this help`;

export const RESIZE_HELP = `usage: blocklayer resize [-f FMT] [--shrink] [--preallocation=MODE] [-q] IMAGE [+|-]SIZE
Changes the virtual size of an image, like qemu-img resize: SIZE in bytes or with a suffix
(k, M, G, T, P, E), or relative to the current size (+1G, -512M).

  -f, --format FMT         the image format (qcow2, raw; probed when absent)
  --shrink                 allow a smaller size (data past the new end is lost)
  --preallocation=MODE     off, metadata, falloc or full: how the grown part is allocated
                           (falloc and full for raw files; off and full for qcow2)
  -q, --quiet              no "Image resized." line
  -h, --help               this help`;
export const SNAPSHOT_HELP = `usage: blocklayer snapshot [-l | -c NAME | -a NAME | -d NAME] [-f FMT] [-q] [-U] IMAGE
Lists, creates, applies or deletes the internal snapshots of a qcow2 image, like qemu-img snapshot.

  -l                        list the snapshots (qemu-img's table; nothing when there are none)
  -c NAME                   take a snapshot NAME of the current state (ids are numbered as QEMU does)
  -a NAME                   make snapshot NAME (an id, else a name) the current state again
  -d NAME                   delete the snapshot named NAME
  -f, --format FMT          image format (qcow2, raw, …); given, it is used without probing
  -q, --quiet               print nothing but errors
  -U, --force-share         open read-only sharing the image with its writer (with -l only)
  --object OBJECTDEF        refused: no secrets (encrypted images are not supported)
  -h, --help                this help`;
export const COMPARE_HELP = `usage: blocklayer compare [-f FMT] [-F FMT] [-s] [-q] [-p] [-U] FILENAME1 FILENAME2
Checks whether two images have the same content, like qemu-img compare (exit 0 identical, 1 different, 2 open error, 3 block status error, 4 read error).

  -f, --format FMT     format of FILENAME1 (probed when absent)
  -F FMT               format of FILENAME2 (probed when absent)
  -s, --strict         a size difference, or a range allocated in one image only, is a difference
  -p, --progress       show progress
  -q, --quiet          print nothing, only the exit code tells
  -U, --force-share    read images another process holds read-write
  -h, --help           this help`;

export const REBASE_HELP = `usage: blocklayer rebase [-f FMT] [-u] [-p] [-q] [-U] -b BACKING [-F BACKING_FMT] FILENAME
Changes the backing file of a qcow2 image, like qemu-img rebase: safe mode first copies into it what would read differently.

  -b BACKING           the new backing file ('' for none: the image becomes standalone); a relative
                       name is stored as given and opened from the image's directory
  -F BACKING_FMT       the new backing file's format (required with a backing file, as qemu-img 7.2)
  -u                   unsafe: change the header only (no backing file is opened, nothing copied)
  -f, --format FMT     the image's format (probed when absent)
  -p, --progress       show progress
  -q, --quiet          quiet
  -U, --force-share    open the new backing file even if another process writes it
  -h, --help           this help`;

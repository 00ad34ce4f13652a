# A cfs volume for Nomad: `nomad volume create deploy/nomad/volume.hcl` makes it
# (CreateVolume), and a job's group claims it with
#   volume "data" { type = "csi"  source = "data"  access_mode = "single-node-writer"  attachment_mode = "file-system" }
id        = "data"
name      = "data"
type      = "csi"
plugin_id = "cfs"

# The size limit; it can be raised later (ControllerExpandVolume).
capacity_min = "1GiB"
capacity_max = "1GiB"

# One node writes a cfs volume at a time; the multi-node modes are refused.
capability {
  access_mode     = "single-node-writer"
  attachment_mode = "file-system"
}

capability {
  access_mode     = "single-node-reader-only"
  attachment_mode = "file-system"
}

parameters {
  replicas   = "2"
  block_size = "65536"
}

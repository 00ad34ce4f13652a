# cfs on Nomad: on every client, the node daemon and the CSI plugin beside it.
#
#   nomad var put nomad/jobs/cfs etcd=http://10.0.0.1:2379 secret="$(head -c 32 /dev/urandom | base64)"
#   nomad job run -var image=REGISTRY/cfs:0.1.0 deploy/nomad/cfs.nomad.hcl
#   nomad volume create deploy/nomad/volume.hcl
#
# The clients' Docker plugin must allow privileged tasks and host volumes:
#   plugin "docker" { config { allow_privileged = true  volumes { enabled = true } } }
#
# One plugin, "monolith" (the plugin in --mode both): docs/DESIGN.md, "CSI", wants the
# controller on a host with a node daemon, and in a system job every client has one.
# Nomad's servers send each controller call to one healthy instance, so the many
# controllers need no leader election.

variable "image" {
  type        = string
  description = "the Dockerfile's image, pushed where the clients pull"
  default     = "registry.example.com/cfs:0.1.0" # PLACEHOLDER
}

variable "nomad_data_dir" {
  type        = string
  description = "the clients' data_dir (Nomad's packages use /opt/nomad/data)"
  default     = "/opt/nomad/data"
}

job "cfs" {
  type = "system"

  group "node" {
    network {
      # Peers dial the client's address; etcd keeps the address each node gives.
      port "peer" {
        static = 7101
      }
    }

    # The node daemon. It starts before the plugin and runs beside it (a prestart
    # sidecar), and is restarted only with the job: its restart ends the FUSE session,
    # and running tasks keep a dead mount until they restart (README, "Docker").
    task "mountd" {
      driver = "docker"

      lifecycle {
        hook    = "prestart"
        sidecar = true
      }

      config {
        image        = var.image
        entrypoint   = ["cfs"]
        args         = [
          "node", "run",
          "--etcd=$${CFS_ETCD}",
          "--listen=$${NOMAD_ADDR_peer}",
          "--secret-file=/secrets/cluster-secret",
          "--no-plugin",
        ]
        network_mode = "host"
        # FUSE and bind mounts (the daemon mounts the volumes, at the paths Nomad gives
        # the plugin), carried out to the host by rshared propagation.
        privileged   = true

        volumes = [
          "/var/lib/cfs:/var/lib/cfs:rshared",
          # Where Nomad has the plugin stage and publish volumes: the plugin sees this
          # host directory at /local/csi (stage_publish_base_dir below) and is given
          # paths under it; the daemon, which does the mounting, must see it at the same
          # path. (A volume, not a mount block: Docker creates the directory if the
          # plugin, which starts after this task, has not yet.)
          "${var.nomad_data_dir}/client/csi/monolith/cfs:/local/csi:rshared",
        ]
      }

      # The cluster secret, from the Nomad variable; the daemon refuses a file others
      # may read.
      template {
        destination = "secrets/cluster-secret"
        perms       = "600"
        data        = <<-EOT
        {{ with nomadVar "nomad/jobs/cfs" }}{{ .secret }}{{ end }}
        EOT
      }

      template {
        destination = "secrets/etcd.env"
        env         = true
        data        = <<-EOT
        CFS_ETCD={{ with nomadVar "nomad/jobs/cfs" }}{{ .etcd }}{{ end }}
        EOT
      }

      # SIGTERM: every volume is flushed, waits for its replicas, and is unmounted.
      kill_timeout = "120s"

      resources {
        cpu    = 200
        memory = 512
      }
    }

    task "plugin" {
      driver = "docker"

      config {
        image      = var.image
        entrypoint = ["cfs"]
        args       = ["csi", "--endpoint=$${CSI_ENDPOINT}", "--mode=both"]
        privileged = true

        # The daemon's control socket, /var/lib/cfs/mountd.sock, and its mounts.
        volumes = ["/var/lib/cfs:/var/lib/cfs:rslave"]
      }

      csi_plugin {
        id                     = "cfs"
        type                   = "monolith"
        mount_dir              = "/csi"
        stage_publish_base_dir = "/local/csi"
        health_timeout         = "60s"
      }

      resources {
        cpu    = 50
        memory = 128
      }
    }
  }
}

<#
.SYNOPSIS
  Add or remove a phigate gateway CA in the Windows machine trust store (Trusted Root CAs).
.EXAMPLE
  # elevated PowerShell
  .\windows.ps1 -Action install   -CertFile phigate-ca.cer
  .\windows.ps1 -Action uninstall -CertFile phigate-ca.cer
.NOTES
  Idempotent: the CA is looked up by thumbprint first. SChannel (Edge, .NET, curl.exe with
  schannel) honours the CA's name constraints. Python and Node do not read this store: set
  SSL_CERT_FILE / NODE_EXTRA_CA_CERTS to the bundle as well (see certs/README.md).
  Export the certificate with `phigate ca export --format der` (PEM works too).
#>
param(
    [Parameter(Mandatory = $true)][ValidateSet('install', 'uninstall')][string]$Action,
    [Parameter(Mandatory = $true)][string]$CertFile,
    [string]$Store = 'Cert:\LocalMachine\Root'
)
$ErrorActionPreference = 'Stop'

$cert = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2 (Resolve-Path $CertFile).Path
$installed = Get-ChildItem -Path $Store | Where-Object { $_.Thumbprint -eq $cert.Thumbprint }

if ($Action -eq 'install') {
    if ($installed) { Write-Output "already installed: $($cert.Thumbprint)"; exit 0 }
    Import-Certificate -FilePath (Resolve-Path $CertFile).Path -CertStoreLocation $Store | Out-Null
    Write-Output "installed: $($cert.Thumbprint)"
} else {
    if (-not $installed) { Write-Output "not installed: $($cert.Thumbprint)"; exit 0 }
    Remove-Item -Path (Join-Path $Store $cert.Thumbprint)
    Write-Output "removed: $($cert.Thumbprint)"
}

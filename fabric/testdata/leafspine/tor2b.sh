# romana fabric routes for device tor2b (tor, group rack=r2): 6 route(s)
ip route replace 10.0.0.0/8 proto static via 172.16.0.4  # pool pods via spine1
ip route replace 10.16.0.0/16 proto static via 192.168.2.13  # host h3
ip route replace 10.17.0.0/16 proto static via 192.168.2.14  # host h4
ip route replace 172.20.0.0/16 proto static via 172.16.0.4  # pool flat via spine1
ip route replace 172.20.32.0/20 proto static via 192.168.2.13  # host h3
ip route replace 172.20.48.0/20 proto static via 192.168.2.14  # host h4
